#!/usr/bin/env bash
# Prometheus + Grafana on the Ray head node, wired the way the Ray dashboard expects, with the vidgen-ray
# dashboard (cluster/grafana/vidgen_dashboard.json) provisioned next to Ray's own.
#
#   ray exec cluster/aws.yaml 'bash ~/vidgen-ray/cluster/start_monitoring.sh'
#   ray attach cluster/aws.yaml -p 3000      # keep open; Grafana at http://127.0.0.1:3000
#
# Prometheus comes from `ray metrics launch-prometheus` (it downloads a release and scrapes every node
# listed in /tmp/ray/prom_metrics_service_discovery.json); Grafana runs with the grafana.ini and
# provisioning that Ray writes to /tmp/ray/session_latest/metrics/grafana. Both listen on the head
# only and the cluster's firewall keeps them private: reach them through SSH forwarding.
# Run it again after a Ray restart (a new session writes new provisioning files).
set -euo pipefail

GRAFANA_VERSION=${GRAFANA_VERSION:-11.6.0}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
metrics=${RAY_METRICS_DIR:-/tmp/ray/session_latest/metrics}   # <temp dir>/session_latest/metrics with --temp-dir
work=${MONITORING_DIR:-$HOME/monitoring}

if [ ! -f "$metrics/grafana/grafana.ini" ]; then
  echo "no $metrics/grafana/grafana.ini: run this on the head node of a running Ray cluster" >&2
  exit 1
fi
answers() { python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)' "$1" 2>/dev/null; }
mkdir -p "$work"
cd "$work"

if answers http://127.0.0.1:9090/-/ready; then
  echo "Prometheus already running"
else
  # nohup: Prometheus outlives this SSH session (the launcher starts it as a child and returns).
  nohup ray metrics launch-prometheus > prometheus-launch.log 2>&1 \
    || { cat prometheus-launch.log >&2; echo "Prometheus did not start (see above)" >&2; exit 1; }
  tail -n 3 prometheus-launch.log
fi

# Ray provisions every dashboard JSON in this folder into Grafana's "Ray" folder.
cp "$here/grafana/vidgen_dashboard.json" "$metrics/grafana/dashboards/"

if answers http://127.0.0.1:3000/api/health; then
  echo "Grafana already running (dashboards are re-read from the provisioning folder)"
else
  case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) echo "no Grafana build for $(uname -m)" >&2; exit 1 ;;
  esac
  if [ ! -x grafana/bin/grafana ]; then
    python - "$GRAFANA_VERSION" "$arch" <<'PY'
import sys, urllib.request
version, arch = sys.argv[1:]
url = f"https://dl.grafana.com/oss/release/grafana-{version}.linux-{arch}.tar.gz"
print(f"downloading {url}")
urllib.request.urlretrieve(url, "grafana.tar.gz")
PY
    mkdir -p grafana
    tar -xzf grafana.tar.gz -C grafana --strip-components=1
    rm grafana.tar.gz
  fi
  # Listen on loopback only: the SSH tunnel and the dashboard (same host) reach it there.
  GF_SERVER_HTTP_ADDR=127.0.0.1 nohup grafana/bin/grafana server --homepath "$work/grafana" \
    --config "$metrics/grafana/grafana.ini" > grafana.log 2>&1 &
  for _ in $(seq 30); do answers http://127.0.0.1:3000/api/health && break; sleep 1; done
  answers http://127.0.0.1:3000/api/health || { echo "Grafana did not start; see $work/grafana.log" >&2; exit 1; }
fi

echo "Prometheus http://127.0.0.1:9090 and Grafana http://127.0.0.1:3000 are up on the head."
echo "Forward them with: ray attach <cluster yaml> -p 3000   (the Ray dashboard's Metrics tab embeds Grafana)"
