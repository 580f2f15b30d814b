# bbr-agent's bootstrap (docs/protocol.md, "Bringing the agent"), read by `sh -s -- MODE
# PROTOCOL SHA256 ARGS...` from the session's stdin, then run: the installed agent when it speaks
# PROTOCOL, else the driver's, read from stdin, checked and run from a private directory.
# Nothing but sh, mkdir, head -c, sha256sum, chmod, rm, stat and id (coreutils, as on every
# stemcell).
bbr_agent_bootstrap() {
	mode=$1 protocol=$2 sum=$3
	shift 3
	installed=${BBR_AGENT_INSTALLED:-/var/vcap/packages/bbr-agent/bin/bbr-agent}
	unset BBR_AGENT_BROUGHT
	if [ "$mode" != bring ] && [ -f "$installed" ] && [ -x "$installed" ]; then
		version=$("$installed" protocol-version </dev/null 2>/dev/null) || version=
		if [ "$version" = "$protocol" ]; then
			printf 'bbr-agent-bootstrap installed %s\n' "$installed"
			exec "$installed" "$@"
		fi
	fi
	if [ "$mode" = installed ]; then
		printf 'bbr-agent-bootstrap missing %s\n' "$installed"
		exit 3
	fi
	base=${BBR_AGENT_TMP:-/var/vcap/data/tmp}
	if [ ! -d "$base" ]; then
		printf 'bbr-agent-bootstrap failed there is no directory %s\n' "$base"
		exit 4
	fi
	# Only a directory no one else can rename entries of: root's (or the user's own, for a run
	# without sudo), and writable by others only when sticky (a non-sticky shared one, BOSH's
	# /tmp for one, lets any writer swap ours).
	me=$(id -u 2>/dev/null) || me=0
	owner_mode=$(stat -L -c '%u %a' "$base" 2>/dev/null) || owner_mode=
	owner=${owner_mode%% *} mode=${owner_mode#* }
	case $mode in '' | *[!0-7]*) mode=7777 owner= ;; esac
	perm=$((0$mode))
	if { [ "$owner" != 0 ] && [ "$owner" != "$me" ]; } || { [ $((perm & 18)) -ne 0 ] && [ $((perm & 512)) -eq 0 ]; }; then
		printf 'bbr-agent-bootstrap failed %s is not a safe directory (it must be root'"'"'s or this user'"'"'s, and sticky if others may write to it)\n' "$base"
		exit 4
	fi
	umask 077
	# A new directory of our own: mkdir fails on anything already there, a link included.
	n=0
	dir=$base/bbr-agent.$$
	until mkdir -m 0700 "$dir" 2>/dev/null; do
		n=$((n + 1))
		if [ "$n" -ge 20 ]; then
			printf 'bbr-agent-bootstrap failed cannot make a directory in %s\n' "$base"
			exit 4
		fi
		dir=$base/bbr-agent.$$.$n
	done
	# From here on by the working directory, which holds the directory itself: a rename of its
	# path changes nothing.
	cd "$dir" || exit 4
	dir=$(pwd -P) || exit 4
	trap 'rm -f ./bbr-agent; cd / && rmdir "$dir"' EXIT
	trap 'exit 1' HUP INT TERM PIPE
	printf 'bbr-agent-bootstrap send\n'
	IFS= read -r len || exit 5
	case $len in
	'' | *[!0-9]*)
		printf 'bbr-agent-bootstrap failed the length is not a number\n'
		exit 5
		;;
	esac
	if ! head -c "$len" >./bbr-agent; then
		printf 'bbr-agent-bootstrap failed cannot write %s\n' "$dir/bbr-agent"
		exit 4
	fi
	got=$(sha256sum ./bbr-agent) || got=
	got=${got%% *}
	if [ "$got" != "$sum" ]; then
		printf 'bbr-agent-bootstrap mismatch %s\n' "$got"
		exit 6
	fi
	chmod 0700 ./bbr-agent || exit 4
	printf 'bbr-agent-bootstrap ok %s\n' "$dir/bbr-agent"
	# The agent removes its file and this directory as it starts (so a SIGKILL leaves nothing);
	# the trap above removes them when the exec itself fails.
	export BBR_AGENT_BROUGHT="$dir/bbr-agent"
	exec ./bbr-agent "$@"
}
bbr_agent_bootstrap "$@"
