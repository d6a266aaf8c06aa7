#!/usr/bin/env bash
# Google Cloud side of mailtriage for Google Workspace: the service account that acts on the
# mailboxes (domain-wide delegation), how mailtriage signs as it, and Pub/Sub push.
# Read INSTALL.md first.
#
# Key-less (default; works where the organisation forbids service-account keys):
#   PROJECT=my-project PUBLIC_URL=https://mailtriage.example.fr \
#   RUNTIME_MEMBER=serviceAccount:mailtriage@my-project.iam.gserviceaccount.com \
#     ./setup-pubsub.sh
#   RUNTIME_MEMBER is the identity mailtriage runs as: the service account attached to its
#   Compute Engine VM or Cloud Run service (it may be the delegating account itself, as
#   above), a workload identity federation principal (principal://... or principalSet://...),
#   or user:you@example.com to try it from a workstation with application-default login.
# Key file (needs an exception to iam.disableServiceAccountKeyCreation, see INSTALL.md):
#   AUTH=key_file PROJECT=my-project PUBLIC_URL=https://mailtriage.example.fr ./setup-pubsub.sh
#
# Needs: gcloud, logged in as someone who may create service accounts, grant roles on them
# and create Pub/Sub resources in $PROJECT. Safe to re-run: existing resources are kept.
set -euo pipefail

: "${PROJECT:?set PROJECT to the Google Cloud project id}"
: "${PUBLIC_URL:?set PUBLIC_URL to the HTTPS address of mailtriage (reverse proxy)}"
AUTH="${AUTH:-iam_signjwt}"                            # iam_signjwt (key-less) or key_file
SA_NAME="${SA_NAME:-mailtriage}"                       # acts on the mailboxes (DWD)
PUSH_SA_NAME="${PUSH_SA_NAME:-mailtriage-push}"        # Pub/Sub signs its push tokens as this
TOPIC="${TOPIC:-mailtriage}"
SUBSCRIPTION="${SUBSCRIPTION:-mailtriage-push}"
KEY_FILE="${KEY_FILE:-./mailtriage-service-account.json}"
ENDPOINT="${PUBLIC_URL%/}/hooks/gmail"

SA="${SA_NAME}@${PROJECT}.iam.gserviceaccount.com"
PUSH_SA="${PUSH_SA_NAME}@${PROJECT}.iam.gserviceaccount.com"
OPERATOR="$(gcloud config get-value account 2>/dev/null)"
case "$OPERATOR" in
  *.gserviceaccount.com) OPERATOR_MEMBER="serviceAccount:${OPERATOR}" ;;
  *) OPERATOR_MEMBER="user:${OPERATOR}" ;;
esac
case "$AUTH" in
  iam_signjwt) : "${RUNTIME_MEMBER:?set RUNTIME_MEMBER to the identity mailtriage runs as (see the top of this script)}" ;;
  key_file) ;;
  *) echo "AUTH must be iam_signjwt or key_file" >&2; exit 2 ;;
esac

gcloud config set project "$PROJECT" >/dev/null
APIS=(gmail.googleapis.com pubsub.googleapis.com)
if [[ "$AUTH" == iam_signjwt ]]; then APIS+=(iamcredentials.googleapis.com); fi
gcloud services enable "${APIS[@]}"

# 1. The service account mailtriage impersonates the mailboxes with (domain-wide delegation).
gcloud iam service-accounts describe "$SA" >/dev/null 2>&1 ||
  gcloud iam service-accounts create "$SA_NAME" --display-name="mailtriage (Gmail triage)"

if [[ "$AUTH" == iam_signjwt ]]; then
  # 2a. Key-less: the runtime identity asks IAM (signJwt) to sign the delegation JWT as $SA.
  #     That needs roles/iam.serviceAccountTokenCreator on $SA, even when the runtime
  #     identity is $SA itself. No key is ever created.
  gcloud iam service-accounts add-iam-policy-binding "$SA" \
    --member="$RUNTIME_MEMBER" --role="roles/iam.serviceAccountTokenCreator" >/dev/null
  echo "granted roles/iam.serviceAccountTokenCreator on $SA to $RUNTIME_MEMBER"
  # Running a VM or a Cloud Run service *as* $SA needs roles/iam.serviceAccountUser on $SA
  # for whoever deploys it (INSTALL.md, step 1); the deployer is not known here.
else
  # 2b. Key file. Organisations created since 3 May 2024 enforce
  #     iam.disableServiceAccountKeyCreation by default: key creation is then refused until
  #     an organisation policy administrator makes an exception for this project.
  if [[ ! -f "$KEY_FILE" ]]; then
    if ! gcloud iam service-accounts keys create "$KEY_FILE" --iam-account="$SA"; then
      cat >&2 <<EOT

Key creation was refused. If the error names iam.disableServiceAccountKeyCreation, your
organisation forbids service-account keys: use the key-less path (AUTH=iam_signjwt,
INSTALL.md step 1), or ask an organisation policy administrator for an exception on
project ${PROJECT} (INSTALL.md, "Key file").
EOT
      exit 1
    fi
    # Keep this file secret (chmod 600, outside the repository); mailtriage reads it from
    # gmail.service_account_file or from the variable named by gmail.service_account_env.
    chmod 600 "$KEY_FILE"
  fi
fi

# 3. The topic Gmail publishes to. Gmail's own publisher must be allowed to publish.
gcloud pubsub topics describe "$TOPIC" >/dev/null 2>&1 || gcloud pubsub topics create "$TOPIC"
gcloud pubsub topics add-iam-policy-binding "$TOPIC" \
  --member="serviceAccount:gmail-api-push@system.gserviceaccount.com" \
  --role="roles/pubsub.publisher" >/dev/null
# (If an organisation policy "Domain restricted sharing" refuses this binding, ask the
#  organisation admin for an exception for gmail-api-push@system.gserviceaccount.com.)

# 4. The push subscription: Pub/Sub POSTs to mailtriage with an OIDC token signed for
#    $PUSH_SA and audience $ENDPOINT; mailtriage verifies both.
gcloud iam service-accounts describe "$PUSH_SA" >/dev/null 2>&1 ||
  gcloud iam service-accounts create "$PUSH_SA_NAME" --display-name="mailtriage push signer"
# Whoever creates or changes a push subscription that signs as $PUSH_SA needs
# iam.serviceAccounts.actAs on it: roles/iam.serviceAccountUser, granted to you here.
gcloud iam service-accounts add-iam-policy-binding "$PUSH_SA" \
  --member="$OPERATOR_MEMBER" --role="roles/iam.serviceAccountUser" >/dev/null
echo "granted roles/iam.serviceAccountUser on $PUSH_SA to $OPERATOR_MEMBER"
# Pub/Sub's service agent mints the push tokens. Projects whose Pub/Sub service agent was
# created on or before 8 April 2021 need it to hold Token Creator; newer ones do not, and
# the grant is harmless there.
PROJECT_NUMBER="$(gcloud projects describe "$PROJECT" --format='value(projectNumber)')"
gcloud iam service-accounts add-iam-policy-binding "$PUSH_SA" \
  --member="serviceAccount:service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com" \
  --role="roles/iam.serviceAccountTokenCreator" >/dev/null
if gcloud pubsub subscriptions describe "$SUBSCRIPTION" >/dev/null 2>&1; then
  gcloud pubsub subscriptions modify-push-config "$SUBSCRIPTION" \
    --push-endpoint="$ENDPOINT" \
    --push-auth-service-account="$PUSH_SA" \
    --push-auth-token-audience="$ENDPOINT"
else
  gcloud pubsub subscriptions create "$SUBSCRIPTION" --topic="$TOPIC" \
    --push-endpoint="$ENDPOINT" \
    --push-auth-service-account="$PUSH_SA" \
    --push-auth-token-audience="$ENDPOINT" \
    --ack-deadline=30 --message-retention-duration=1d
fi

CLIENT_ID="$(gcloud iam service-accounts describe "$SA" --format='value(oauth2ClientId)')"
if [[ "$AUTH" == iam_signjwt ]]; then
  CREDENTIALS="auth = \"iam_signjwt\"
  service_account_email = \"${SA}\""
else
  CREDENTIALS="service_account_file = \"$(realpath "$KEY_FILE")\""
fi
cat <<EOT

Done. Now, as a Workspace super admin (INSTALL.md step 3):
  Admin console → Security → Access and data control → API controls
  → Manage Domain Wide Delegation → Add new
      Client ID:    ${CLIENT_ID}
      OAuth scopes: $(paste -sd, "$(dirname "$0")/scopes.txt")

Then in mailtriage.toml:
  [gmail]
  ${CREDENTIALS}
  pubsub_topic = "projects/${PROJECT}/topics/${TOPIC}"
  push_audience = "${ENDPOINT}"
  push_service_account = "${PUSH_SA}"
EOT
