"""`make demo` and the lab of real VMs it runs on (also used by the system tests)."""
