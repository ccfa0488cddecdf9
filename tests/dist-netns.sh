#!/bin/sh
# tests/dist-netns.sh RUNEXP CONFIG [key=value ...]: trains CONFIG on two "hosts" of one machine.
# Two network namespaces joined by a veth pair (10.77.0.1 and 10.77.0.2), each with its own host
# name (a UTS namespace); mpirun starts in the first, and reaches the second through an rsh agent
# that runs `ip netns exec` instead of ssh. MPI talks TCP over the veth only (btl tcp,self; no
# shared memory between the ranks), as two hosts on a network would. One rank per host.
# Needs root and iproute2; exits 77 with the reason on stderr where namespaces cannot
# be made (a container without CAP_SYS_ADMIN, no ip command). The namespaces go, whatever happens.
set -u
skip() { echo "$*" >&2; exit 77; }
[ $# -ge 2 ] || { echo "usage: $0 RUNEXP CONFIG [key=value ...]" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || skip "tests/dist-netns.sh needs root to make network namespaces"
command -v ip >/dev/null 2>&1 || skip "no ip command (install iproute2)"
command -v unshare >/dev/null 2>&1 || skip "no unshare command (util-linux)"
command -v mpirun >/dev/null 2>&1 || skip "mpirun is not on the PATH (install openmpi-bin)"

a=rxa$$ b=rxb$$
work=$(mktemp -d /tmp/runexp-netns-XXXXXX)
cleanup() { ip netns del "$a" 2>/dev/null; ip netns del "$b" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

why=$(ip netns add "$a" 2>&1) || skip "cannot make a network namespace here: $why"
ip netns add "$b" || exit 1
ip link add "va$$" type veth peer name "vb$$" || skip "cannot make a veth pair here"
ip link set "va$$" netns "$a" && ip link set "vb$$" netns "$b" || exit 1
ip -n "$a" addr add 10.77.0.1/24 dev "va$$" && ip -n "$b" addr add 10.77.0.2/24 dev "vb$$" || exit 1
for ns in "$a" "$b"; do ip -n "$ns" link set lo up || exit 1; done
ip -n "$a" link set "va$$" up && ip -n "$b" link set "vb$$" up || exit 1

# The rsh agent: mpirun calls it as `agent HOST COMMAND...`; HOST is a namespace's name.
cat >"$work/agent" <<EOF
#!/bin/sh
host=\$1; shift
exec ip netns exec "\$host" unshare --uts sh -c "hostname \$host; \$*"
EOF
chmod +x "$work/agent"
printf '%s slots=1\n%s slots=1\n' "$a" "$b" >"$work/hosts"

runexp=$1; shift
# The variables the remote rank needs from here (the sanitizers' options, under make check's).
pass=""
for v in PATH LD_LIBRARY_PATH OMP_WAIT_POLICY ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS; do
    eval "[ -n \"\${$v+set}\" ]" && pass="$pass -x $v"
done
ip netns exec "$a" unshare --uts sh -c 'hostname "$0"; exec "$@"' "$a" \
    mpirun --allow-run-as-root -np 2 --hostfile "$work/hosts" --map-by node \
    --mca plm_rsh_agent "$work/agent" --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 \
    --mca oob_tcp_if_include 10.77.0.0/24 $pass \
    --wdir "$PWD" "$runexp" "$@"
