#!/usr/bin/env bash
# Google Cloud side of mailtriage for Google Workspace: service account, Gmail API,
# Pub/Sub topic + authenticated push subscription. Read INSTALL.md first.
#
# Usage: PROJECT=my-project PUBLIC_URL=https://mailtriage.example.fr ./setup-pubsub.sh
# Needs: gcloud, logged in as someone who may create service accounts and Pub/Sub
# resources in $PROJECT. Safe to re-run: existing resources are reported, not duplicated.
set -euo pipefail

: "${PROJECT:?set PROJECT to the Google Cloud project id}"
: "${PUBLIC_URL:?set PUBLIC_URL to the HTTPS address of mailtriage (reverse proxy)}"
SA_NAME="${SA_NAME:-mailtriage}"                       # reads the mailboxes (DWD)
PUSH_SA_NAME="${PUSH_SA_NAME:-mailtriage-push}"        # signs the push requests (OIDC)
TOPIC="${TOPIC:-mailtriage}"
SUBSCRIPTION="${SUBSCRIPTION:-mailtriage-push}"
KEY_FILE="${KEY_FILE:-./mailtriage-service-account.json}"
ENDPOINT="${PUBLIC_URL%/}/hooks/gmail"

SA="${SA_NAME}@${PROJECT}.iam.gserviceaccount.com"
PUSH_SA="${PUSH_SA_NAME}@${PROJECT}.iam.gserviceaccount.com"

gcloud config set project "$PROJECT" >/dev/null
gcloud services enable gmail.googleapis.com pubsub.googleapis.com

# 1. The service account mailtriage impersonates the mailboxes with (domain-wide delegation).
gcloud iam service-accounts describe "$SA" >/dev/null 2>&1 ||
  gcloud iam service-accounts create "$SA_NAME" --display-name="mailtriage (Gmail triage)"
if [[ ! -f "$KEY_FILE" ]]; then
  # Keep this file secret (chmod 600, outside the repository); mailtriage reads it from
  # gmail.service_account_file or from the variable named by gmail.service_account_env.
  gcloud iam service-accounts keys create "$KEY_FILE" --iam-account="$SA"
  chmod 600 "$KEY_FILE"
fi

# 2. The topic Gmail publishes to. Gmail's own publisher must be allowed to publish.
gcloud pubsub topics describe "$TOPIC" >/dev/null 2>&1 || gcloud pubsub topics create "$TOPIC"
gcloud pubsub topics add-iam-policy-binding "$TOPIC" \
  --member="serviceAccount:gmail-api-push@system.gserviceaccount.com" \
  --role="roles/pubsub.publisher"
# (If an organisation policy "Domain restricted sharing" refuses this binding, ask the
#  organisation admin for an exception for gmail-api-push@system.gserviceaccount.com.)

# 3. The push subscription: Pub/Sub POSTs to mailtriage with an OIDC token signed for
#    $PUSH_SA and audience $ENDPOINT; mailtriage verifies both.
gcloud iam service-accounts describe "$PUSH_SA" >/dev/null 2>&1 ||
  gcloud iam service-accounts create "$PUSH_SA_NAME" --display-name="mailtriage push signer"
PROJECT_NUMBER="$(gcloud projects describe "$PROJECT" --format='value(projectNumber)')"
gcloud iam service-accounts add-iam-policy-binding "$PUSH_SA" \
  --member="serviceAccount:service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com" \
  --role="roles/iam.serviceAccountTokenCreator"
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
cat <<EOT

Done. Now, as a Workspace super admin (INSTALL.md step 3):
  Admin console → Security → Access and data control → API controls
  → Manage Domain Wide Delegation → Add new
      Client ID:    ${CLIENT_ID}
      OAuth scopes: $(paste -sd, "$(dirname "$0")/scopes.txt")

Then in mailtriage.toml:
  [gmail]
  service_account_file = "$(realpath "$KEY_FILE")"
  pubsub_topic = "projects/${PROJECT}/topics/${TOPIC}"
  push_audience = "${ENDPOINT}"
  push_service_account = "${PUSH_SA}"
EOT
