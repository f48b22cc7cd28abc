#!/usr/bin/env bash
# airflow-init of docker-compose.yaml: one-shot, as root, through the image's entrypoint (which
# has already waited for PostgreSQL and, with _AIRFLOW_DB_MIGRATE=true, migrated the database).
# It leaves what every other service needs in the shared volumes, owned by AIRFLOW_UID:0:
#   /opt/airflow/config/airflow.cfg   this installation's generated secrets (JWT, API, Fernet)
#                                     that the API server, scheduler and workers must share
#   /opt/airflow/config/simple_auth_manager_passwords.json   the UI login
#   /opt/airflow/ssh/id_ed25519       the workers' key for the demo VMs (never printed)
#   /demo-vm-keys/authorized_keys     its public half, for the demo VMs
set -euo pipefail

uid="${AIRFLOW_UID:-50000}"
setup=/opt/skytap/docker/compose_setup.py

mkdir -p /opt/airflow/logs /opt/airflow/config /opt/airflow/ssh /demo-vm-keys

# Any airflow command writes AIRFLOW_CONFIG with fresh secrets when it does not exist yet.
airflow config list >/dev/null
test -s "${AIRFLOW_CONFIG}"

python "${setup}" ui-password \
  --file "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}" \
  --user "${_AIRFLOW_WWW_USER_USERNAME:-airflow}"
python "${setup}" ssh-key \
  --private /opt/airflow/ssh/id_ed25519 --public /demo-vm-keys/authorized_keys

chown -R "${uid}:0" /opt/airflow/logs /opt/airflow/config /opt/airflow/ssh
chmod 0700 /opt/airflow/ssh

echo "Airflow $(airflow version) is set up; the provider:"
airflow providers get airflow-provider-skytap
