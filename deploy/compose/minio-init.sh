#!/bin/sh
# One-shot run by deploy/compose.yml (image minio/mc) once MinIO is healthy: creates the
# registry's bucket, a policy limited to it, and the registry's MinIO user with the keys of
# the registry's credentials secret. Idempotent: a re-run (`docker compose up` again)
# changes nothing that is already there.
#
# Inputs (compose secrets and environment):
#   $SECRETS_DIR/minio_root_user, $SECRETS_DIR/minio_root_password   MinIO's admin
#   $SECRETS_DIR/registry-credentials.toml   [blob_store.s3] access_key_id, secret_key
#   MINIO_URL (http://minio:9000), BUCKET (simple-registry), SECRETS_DIR (/run/secrets)
set -eu

MINIO_URL="${MINIO_URL:-http://minio:9000}"
BUCKET="${BUCKET:-simple-registry}"
POLICY=simple-registry-bucket
SECRETS_DIR="${SECRETS_DIR:-/run/secrets}"
CREDENTIALS="$SECRETS_DIR/registry-credentials.toml"
POLICY_FILE="${TMPDIR:-/tmp}/simple-registry-policy.json"
export MC_CONFIG_DIR="${MC_CONFIG_DIR:-${TMPDIR:-/tmp}/.mc}"

# The value of the first `KEY = "value"` line of a TOML file, with shell built-ins only
# (the mc image has little more than a shell: no sed, awk or grep assumed). Good enough for the flat string keys here.
toml_string() {
    key="$1"
    while IFS= read -r line || [ -n "$line" ]; do
        line="${line#"${line%%[![:space:]]*}"}"
        case "$line" in
            "$key"*=*)
                name="${line%%=*}"
                name="${name%"${name##*[![:space:]]}"}"
                [ "$name" = "$key" ] || continue
                value="${line#*=}"
                value="${value#*\"}"
                printf '%s' "${value%%\"*}"
                return 0
                ;;
        esac
    done <"$2"
    return 1
}

read_secret() {
    IFS= read -r value <"$1" || [ -n "$value" ]
    printf '%s' "$value"
}

root_user="$(read_secret "$SECRETS_DIR/minio_root_user")"
root_password="$(read_secret "$SECRETS_DIR/minio_root_password")"
access_key="$(toml_string access_key_id "$CREDENTIALS")" \
    || { echo "minio-init: no access_key_id in $CREDENTIALS" >&2; exit 1; }
secret_key="$(toml_string secret_key "$CREDENTIALS")" \
    || { echo "minio-init: no secret_key in $CREDENTIALS" >&2; exit 1; }

mc alias set registry "$MINIO_URL" "$root_user" "$root_password" >/dev/null
mc mb --ignore-existing "registry/$BUCKET"

printf '%s\n' '{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::'"$BUCKET"'"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                 "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
      "Resource": ["arn:aws:s3:::'"$BUCKET"'/*"]
    }
  ]
}' >"$POLICY_FILE"
mc admin policy create registry "$POLICY" "$POLICY_FILE"
mc admin user add registry "$access_key" "$secret_key"
# Attaching a policy that is already attached fails: look first.
user_info="$(mc admin user info registry "$access_key")"
case "$user_info" in
    *"$POLICY"*) ;;
    *) mc admin policy attach registry "$POLICY" --user "$access_key" ;;
esac
echo "minio-init: bucket $BUCKET ready, user $access_key limited to it"
