#!/usr/bin/env bash
# Stamps out a tenant's dedicated namespace from this overlay (written for the example tenant "acme"):
#   k8s/overlays/tenant/new-tenant.sh TENANT API_HOST [GOOGLE_SERVICE_ACCOUNT] [OUT_DIR]
# writes OUT_DIR (default k8s/overlays/tenant-TENANT): namespace altan-tenant-TENANT with its own runners,
# NetworkPolicies, ResourceQuota, LimitRange and configuration, the API at https://API_HOST, the integrator acting
# as GOOGLE_SERVICE_ACCOUNT (default altan-TENANT@my-gcp-project.iam.gserviceaccount.com). Review tenant.env, then
# `kubectl apply -k OUT_DIR` (README "Deploying to GKE").
set -euo pipefail

die() { echo "new-tenant.sh: $*" >&2; exit 1; }
[[ $# -ge 2 && $# -le 4 ]] || die "usage: new-tenant.sh TENANT API_HOST [GOOGLE_SERVICE_ACCOUNT] [OUT_DIR]"
tenant=$1
host=$2
# the namespace altan-tenant-TENANT must be a DNS label (at most 63 characters)
[[ $tenant =~ ^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?$ ]] || die "TENANT must be lowercase letters, digits and '-' (at most 50)"
[[ $host =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$ ]] || die "API_HOST must be a host name"
here=$(cd "$(dirname "$0")" && pwd)
gsa=${3:-altan-$tenant@my-gcp-project.iam.gserviceaccount.com}
[[ $gsa =~ ^[a-z0-9-]+@[a-z0-9.-]+$ ]] || die "GOOGLE_SERVICE_ACCOUNT must be an e-mail address"
out=${4:-$here/../tenant-$tenant}
[[ ! -e $out ]] || die "$out exists"
mkdir -p "$out"
out=$(cd "$out" && pwd)
gke=$(realpath --relative-to="$out" "$here/../gke")

for file in kustomization.yaml tenant.env tenant-patches.yaml quota.yaml; do
  # host and service account first (they may contain the example's name), then the tenant's name
  sed -e "s#\.\./gke#$gke#" \
    -e "s#acme\.api\.example\.com#@@HOST@@#g" \
    -e "s#altan-acme@my-gcp-project\.iam\.gserviceaccount\.com#@@GSA@@#g" \
    -e "s#acme#$tenant#g" \
    -e "s#@@HOST@@#$host#g" \
    -e "s#@@GSA@@#$gsa#g" \
    -e "s#^\# Example tenant .*#\# Tenant \"$tenant\", stamped out by k8s/overlays/tenant/new-tenant.sh.#" \
    "$here/$file" >"$out/$file"
done
echo "$out"
