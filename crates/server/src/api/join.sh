#!/bin/sh
# Joins this machine to a Wharf pool. `wharf node join-command --pool P`
# prints the line that fetches this script and runs it, as root, with:
#   WHARF_SERVER      the server URL
#   WHARF_POOL        the pool
#   WHARF_JOIN_TOKEN  a single-use join token (the agent trades it for the
#                     node's own credential, kept 0600 in its node dir)
#   WHARF_SHA256      the SHA-256 of the server's wharf binary
# Optional:
#   WHARF_NODE_NAME   the node's name [hostname]
#   WHARF_NODE_DIR    the agent's node dir [/var/lib/wharf/node]
#   WHARF_BIN         where wharf is installed [/usr/local/bin/wharf]
#   WHARF_AGENT_ARGS  more `wharf agent` arguments
#   WHARF_NO_SYSTEMD  set: start the agent in the background even where
#                     systemd runs (without /run/systemd/system that is
#                     what happens anyway: containers, network namespaces)
set -eu
: "${WHARF_SERVER:?}" "${WHARF_POOL:?}" "${WHARF_JOIN_TOKEN:?}" "${WHARF_SHA256:?}"
node="${WHARF_NODE_NAME:-$(hostname)}"
node_dir="${WHARF_NODE_DIR:-/var/lib/wharf/node}"
bin="${WHARF_BIN:-/usr/local/bin/wharf}"
say() { echo "wharf join: $*"; }

[ "$(id -u)" = 0 ] || { say "run as root" >&2; exit 1; }

# What the agent needs, installed only when missing (apt-get needs the
# network; a machine that has everything never calls it).
missing=""
for need in runc:runc ip:iproute2 nft:nftables sha256sum:coreutils; do
	command -v "${need%%:*}" >/dev/null 2>&1 || missing="$missing ${need#*:}"
done
if [ -n "$missing" ]; then
	say "installing$missing"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
else
	say "runc, iproute2, nftables present"
fi

umask 077
mkdir -p "$node_dir" "$(dirname "$bin")"
download="$bin.join.$$"
curl -fsS -H "Wharf-Join-Token: $WHARF_JOIN_TOKEN" -o "$download" "$WHARF_SERVER/api/v1/join/wharf"
if ! echo "$WHARF_SHA256  $download" | sha256sum -c --status -; then
	rm -f "$download"
	say "the downloaded binary's SHA-256 is not $WHARF_SHA256: not installed" >&2
	exit 1
fi
chmod 0755 "$download"
mv -f "$download" "$bin"
say "installed $bin (sha256 $WHARF_SHA256)"

printf 'WHARF_JOIN_TOKEN=%s\n' "$WHARF_JOIN_TOKEN" >"$node_dir/join.env"
args="agent --server $WHARF_SERVER --name $node --node-dir $node_dir ${WHARF_AGENT_ARGS:-}"
if [ -d /run/systemd/system ] && [ -z "${WHARF_NO_SYSTEMD:-}" ]; then
	# KillMode=process: a restarted agent finds its containers running.
	# Exit 78: the node's credential was revoked (decommissioned): stay down.
	cat >/etc/systemd/system/wharf-agent.service <<UNIT
[Unit]
Description=Wharf node agent ($node, pool $WHARF_POOL)
After=network-online.target
Wants=network-online.target

[Service]
EnvironmentFile=$node_dir/join.env
ExecStart=$bin $args
KillMode=process
Restart=always
RestartSec=2
RestartPreventExitStatus=78

[Install]
WantedBy=multi-user.target
UNIT
	systemctl daemon-reload
	systemctl enable --now wharf-agent.service
	say "agent of node $node started: systemctl status wharf-agent"
else
	say "systemd is not running here: starting the agent in the background (log $node_dir/agent.log)"
	# shellcheck disable=SC2086 # args are words
	WHARF_JOIN_TOKEN="$WHARF_JOIN_TOKEN" nohup "$bin" $args >>"$node_dir/agent.log" 2>&1 </dev/null &
	echo $! >"$node_dir/agent.pid"
	say "agent of node $node started, pid $(cat "$node_dir/agent.pid")"
fi
