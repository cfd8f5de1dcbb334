/**
 * `GET /agent/install.sh`: the script that turns a GPU host into a Dumont agent in one line, and the
 * line itself. The script is POSIX sh; the server fills in only its own URL, shell-quoted.
 */

/** Paths on the installed system; `--root DIR` prefixes them (images, tests). */
export const INSTALL_LIB_DIR = '/usr/local/lib/dumont';
export const INSTALL_BUNDLE_PATH = `${INSTALL_LIB_DIR}/dumont-agent.mjs`;
export const INSTALL_WRAPPER_PATH = '/usr/local/bin/dumont-agent';
export const MIN_NODE_MAJOR = 20;

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
    .replaceAll('@@MIN_NODE_MAJOR@@', String(MIN_NODE_MAJOR));
}

const TEMPLATE = `#!/bin/sh
# Installs dumont-agent from a Dumont server: checks Node, downloads the agent bundle, verifies its
# SHA-256, installs it, then runs \`dumont-agent install\` (systemd unit, config, token file 0600).
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
#   any other option after -- is passed to \`dumont-agent install\` (e.g. -- --hibernate-hook CMD)
set -eu

server=@@SERVER_URL@@
api_url=
instance_id=
token_file=
token_stdin=0
root=

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

command -v node >/dev/null 2>&1 || fail "node not found: install Node.js @@MIN_NODE_MAJOR@@ or later first"
node_bin=$(command -v node)
node_version=$("$node_bin" --version)
node_major=\${node_version#v}
node_major=\${node_major%%.*}
case "$node_major" in
  ''|*[!0-9]*) fail "cannot read the Node.js version from '$node_version'" ;;
esac
[ "$node_major" -ge @@MIN_NODE_MAJOR@@ ] || fail "Node.js $node_version is too old: @@MIN_NODE_MAJOR@@ or later is required"

download() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 3 -o "$2" "$1" || fail "download of $1 failed"
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
download "$server/agent/dumont-agent.mjs" "$work/dumont-agent.mjs"
download "$server/agent/dumont-agent.mjs.sha256" "$work/dumont-agent.mjs.sha256"
expected=$(cut -d ' ' -f 1 < "$work/dumont-agent.mjs.sha256")
actual=$(sha256_of "$work/dumont-agent.mjs")
[ -n "$expected" ] && [ "$expected" = "$actual" ] || fail "checksum mismatch for dumont-agent.mjs (expected $expected, got $actual): nothing installed"

# Installed whole, then renamed: a running agent never sees a half-written file.
umask 022
mkdir -p "$root@@LIB_DIR@@" "$root$(dirname @@WRAPPER_PATH@@)"
cp "$work/dumont-agent.mjs" "$root@@BUNDLE_PATH@@.tmp"
chmod 0755 "$root@@BUNDLE_PATH@@.tmp"
mv -f "$root@@BUNDLE_PATH@@.tmp" "$root@@BUNDLE_PATH@@"
printf '#!/bin/sh\\nexec %s %s "$@"\\n' "$node_bin" @@BUNDLE_PATH@@ > "$root@@WRAPPER_PATH@@.tmp"
chmod 0755 "$root@@WRAPPER_PATH@@.tmp"
mv -f "$root@@WRAPPER_PATH@@.tmp" "$root@@WRAPPER_PATH@@"

# The agent writes the unit, its config and the token file (0600) itself; the token reaches it
# through its environment, which only root can read.
umask 077
DUMONT_AGENT_TOKEN=$token "$node_bin" "$root@@BUNDLE_PATH@@" install --root "\${root:-/}" --instance-id "$instance_id" --api-url "$api_url" "$@"
`;
