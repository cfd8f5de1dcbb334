/**
 * `GET /agent/install.sh`: the script that turns a GPU host into a Dumont agent in one line, and the
 * line itself. The script is POSIX sh; the server fills in only its own URL, shell-quoted.
 */

/** Paths on the installed system; `--root DIR` prefixes them (images, tests). */
export const INSTALL_LIB_DIR = '/usr/local/lib/dumont';
export const INSTALL_BUNDLE_PATH = `${INSTALL_LIB_DIR}/dumont-agent.mjs`;
export const INSTALL_WRAPPER_PATH = '/usr/local/bin/dumont-agent';
export const MIN_NODE_MAJOR = 20;
/** The agent package's own floor (engines: >=20.19). */
export const MIN_NODE_MINOR = 19;
/** The oldest glibc the single executable runs on: that of the official Node.js 20 build it is made from. */
export const MIN_GLIBC = '2.28';

/** Where the one-liner expects the operator to have saved the agent token on the GPU host. */
export const TOKEN_FILE_PLACEHOLDER = './dumont-agent.token';

/** One word for sh: single quotes keep `$`, backquotes and spaces literal. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * The one line an operator runs on a GPU host as root, after saving the agent token to
 * TOKEN_FILE_PLACEHOLDER. The token is read from that file by the script: it never appears in this
 * line, so it is neither in shell history nor in any process's argument list (`ps`). Not
 * `--token-stdin`: with `curl … | sh` stdin is the script itself, and sudo closes other descriptors.
 */
export function installCommand(publicUrl: string, instanceId: number): string {
  const server = publicUrl.replace(/\/+$/, '');
  return (
    `curl -fsSL ${shellQuote(`${server}/agent/install.sh`)} | sudo sh -s -- ` +
    `--server ${shellQuote(server)} --instance-id ${instanceId} --token-file ${TOKEN_FILE_PLACEHOLDER}`
  );
}

export function renderInstallScript(serverUrl: string): string {
  return TEMPLATE.replace('@@SERVER_URL@@', shellQuote(serverUrl.replace(/\/+$/, '')))
    .replaceAll('@@LIB_DIR@@', INSTALL_LIB_DIR)
    .replaceAll('@@BUNDLE_PATH@@', INSTALL_BUNDLE_PATH)
    .replaceAll('@@WRAPPER_PATH@@', INSTALL_WRAPPER_PATH)
    .replaceAll('@@MIN_NODE_MAJOR@@', String(MIN_NODE_MAJOR))
    .replaceAll('@@MIN_NODE_MINOR@@', String(MIN_NODE_MINOR))
    .replaceAll('@@MIN_GLIBC@@', MIN_GLIBC)
    .replaceAll('@@MIN_GLIBC_MINOR@@', MIN_GLIBC.split('.')[1]!);
}

const TEMPLATE = `#!/bin/sh
# Installs dumont-agent from a Dumont server. With Node.js @@MIN_NODE_MAJOR@@ or later on the host it installs
# the agent bundle (about 230 KB) run by that node; without one (most GPU images ship Python, not Node),
# the single executable (node and the agent in one file, glibc @@MIN_GLIBC@@ or later). Either is verified
# against the server's SHA-256 before anything is installed; then \`dumont-agent install\` writes the
# systemd unit, the config and the token file (0600). Without systemd it says how to run the agent.
#
#   curl -fsSL SERVER/agent/install.sh | sudo sh -s -- --instance-id N --token-file FILE
#
# options:
#   --server URL        Dumont server to download from and report to (default: the one serving this script)
#   --api-url URL       server the agent reports to, when not --server
#   --instance-id N     this host's instance id (required)
#   --token-file FILE   file holding the agent token (one of --token-file and --token-stdin is required)
#   --token-stdin       read the agent token from stdin (only when this script is not itself on stdin)
#   --root DIR          install under DIR instead of / (images, tests): systemd is not touched
#   --binary            install the single executable even where a suitable Node.js is installed
#   --no-systemd        do not set up a systemd service (automatic where systemd is not running)
#   any other option after -- is passed to \`dumont-agent install\` (e.g. -- --hibernate-hook CMD)
set -eu

server=@@SERVER_URL@@
api_url=
instance_id=
token_file=
token_stdin=0
root=
binary=0
systemd=auto

fail() {
  echo "dumont install: $*" >&2
  exit 1
}
need_value() {
  [ "$#" -ge 2 ] || fail "$1 needs a value"
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    --server) need_value "$@"; server=$2; shift 2 ;;
    --api-url) need_value "$@"; api_url=$2; shift 2 ;;
    --instance-id) need_value "$@"; instance_id=$2; shift 2 ;;
    --token-file) need_value "$@"; token_file=$2; shift 2 ;;
    --token-stdin) token_stdin=1; shift ;;
    --root) need_value "$@"; root=$2; shift 2 ;;
    --binary) binary=1; shift ;;
    --no-systemd) systemd=0; shift ;;
    --) shift; break ;;
    *) fail "unknown option $1 (agent options go after --)" ;;
  esac
done
server=\${server%/}
[ -n "$api_url" ] || api_url=$server

case "$instance_id" in
  ''|*[!0-9]*) fail "--instance-id N is required (a positive integer)" ;;
esac
if [ -n "$root" ]; then
  [ -d "$root" ] || fail "--root $root is not a directory"
  root=$(cd "$root" && pwd)
fi
# An image built with --root gets its unit whatever the building host runs; a live host needs systemd.
if [ "$systemd" = auto ]; then
  if [ -n "$root" ] || [ -d /run/systemd/system ]; then systemd=1; else systemd=0; fi
fi

# The token: from a file or stdin, never from the command line (shell history, ps).
if [ -n "$token_file" ]; then
  [ -r "$token_file" ] || fail "cannot read the token file $token_file"
  token=$(tr -d ' \\t\\r\\n' < "$token_file")
elif [ "$token_stdin" = 1 ]; then
  token=$(tr -d ' \\t\\r\\n')
else
  fail "give the agent token with --token-file FILE (or --token-stdin)"
fi
[ -n "$token" ] || fail "the agent token is empty"

# A suitable node runs the small bundle (and gets the image's updates); anything else, the single executable.
node_bin=
if [ "$binary" = 0 ] && command -v node >/dev/null 2>&1; then
  node_version=$(node --version 2>/dev/null || true)
  node_major=\${node_version#v}
  node_minor=\${node_major#*.}
  node_major=\${node_major%%.*}
  node_minor=\${node_minor%%.*}
  case "$node_major.$node_minor" in
    *[!0-9.]*|.*|*.) echo "dumont install: cannot read the Node.js version ('$node_version'): installing the single executable" >&2 ;;
    *)
      if [ "$node_major" -gt @@MIN_NODE_MAJOR@@ ] || { [ "$node_major" -eq @@MIN_NODE_MAJOR@@ ] && [ "$node_minor" -ge @@MIN_NODE_MINOR@@ ]; }; then
        node_bin=$(command -v node)
      else
        echo "dumont install: Node.js $node_version is older than @@MIN_NODE_MAJOR@@.@@MIN_NODE_MINOR@@: installing the single executable" >&2
      fi ;;
  esac
fi
if [ -z "$node_bin" ]; then
  case "$(uname -m)" in
    x86_64|amd64) arch=x64 ;;
    aarch64|arm64) arch=arm64 ;;
    *) fail "no agent binary for $(uname -m): install Node.js @@MIN_NODE_MAJOR@@ or later and run this again" ;;
  esac
  glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | cut -d ' ' -f 2 || true)
  [ -n "$glibc" ] || fail "this host's C library is not glibc (musl, as on Alpine?): the agent binary needs glibc @@MIN_GLIBC@@ or later; install Node.js @@MIN_NODE_MAJOR@@ or later and run this again"
  glibc_major=\${glibc%%.*}
  glibc_minor=\${glibc#*.}
  glibc_minor=\${glibc_minor%%.*}
  case "$glibc_major.$glibc_minor" in
    *[!0-9.]*|.*|*.) fail "cannot read the glibc version from '$glibc'" ;;
  esac
  if [ "$glibc_major" -lt 2 ] || { [ "$glibc_major" -eq 2 ] && [ "$glibc_minor" -lt @@MIN_GLIBC_MINOR@@ ]; }; then
    fail "glibc $glibc is older than @@MIN_GLIBC@@, which the agent binary needs: install Node.js @@MIN_NODE_MAJOR@@ or later and run this again"
  fi
fi

download() {
  if command -v curl >/dev/null 2>&1; then
    # --compressed: the binary travels gzipped (about a third of its size) when the server has it so.
    curl -fsSL --compressed --retry 3 -o "$2" "$1" || fail "download of $1 failed"
  elif command -v wget >/dev/null 2>&1; then
    wget -q -O "$2" "$1" || fail "download of $1 failed"
  else
    fail "neither curl nor wget is installed"
  fi
}
sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d ' ' -f 1
  elif command -v shasum >/dev/null 2>&1; then
    shasum -a 256 "$1" | cut -d ' ' -f 1
  else
    fail "neither sha256sum nor shasum is installed"
  fi
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -n "$node_bin" ]; then
  file=dumont-agent.mjs
else
  file=dumont-agent-linux-$arch
fi
download "$server/agent/$file" "$work/$file"
download "$server/agent/$file.sha256" "$work/$file.sha256"
expected=$(cut -d ' ' -f 1 < "$work/$file.sha256")
actual=$(sha256_of "$work/$file")
[ -n "$expected" ] && [ "$expected" = "$actual" ] || fail "checksum mismatch for $file (expected $expected, got $actual): nothing installed"

# Installed whole, then renamed: a running agent never sees a half-written file.
umask 022
mkdir -p "$root$(dirname @@WRAPPER_PATH@@)"
if [ -n "$node_bin" ]; then
  mkdir -p "$root@@LIB_DIR@@"
  cp "$work/$file" "$root@@BUNDLE_PATH@@.tmp"
  chmod 0755 "$root@@BUNDLE_PATH@@.tmp"
  mv -f "$root@@BUNDLE_PATH@@.tmp" "$root@@BUNDLE_PATH@@"
  printf '#!/bin/sh\\nexec %s %s "$@"\\n' "$node_bin" @@BUNDLE_PATH@@ > "$root@@WRAPPER_PATH@@.tmp"
else
  cp "$work/$file" "$root@@WRAPPER_PATH@@.tmp"
fi
chmod 0755 "$root@@WRAPPER_PATH@@.tmp"
mv -f "$root@@WRAPPER_PATH@@.tmp" "$root@@WRAPPER_PATH@@"

umask 077
if [ "$systemd" = 0 ]; then
  # No service manager to hand the agent to (a container): its token goes where \`run\` reads it, and
  # the operator starts it in the foreground or under the image's own supervisor.
  mkdir -p "$root/etc/dumont-agent"
  printf '%s\\n' "$token" > "$root/etc/dumont-agent/token.tmp"
  mv -f "$root/etc/dumont-agent/token.tmp" "$root/etc/dumont-agent/token"
  echo "dumont install: systemd is not running here (a container?): dumont-agent is installed but not started."
  echo "Run it in the foreground, or make this command your supervisor's (supervisord, s6, runit, tini):"
  echo ""
  echo "    @@WRAPPER_PATH@@ run --instance-id $instance_id --api-url $api_url --token-file /etc/dumont-agent/token $*"
  exit 0
fi
# The agent writes the unit, its config and the token file (0600) itself; the token reaches it
# through its environment, which only root can read.
if [ -n "$node_bin" ]; then
  DUMONT_AGENT_TOKEN=$token "$node_bin" "$root@@BUNDLE_PATH@@" install --root "\${root:-/}" --instance-id "$instance_id" --api-url "$api_url" "$@"
else
  DUMONT_AGENT_TOKEN=$token "$root@@WRAPPER_PATH@@" install --root "\${root:-/}" --instance-id "$instance_id" --api-url "$api_url" "$@"
fi
`;
