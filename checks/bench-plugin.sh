#!/usr/bin/env bash
# Benchmark of the evaluator plugin against the generator's derivation, for each every-feature
# fixture, as ratios measured in one run (this machine is noisy; compare ratios, not times):
#
#   evaluation: N calls of builtins.microvmRender on the spec (what evaluating a runner costs
#     with the plugin) against N of builtins.toJSON on it (what the spec path costs without it,
#     which writes the spec for `microvm-codegen generate`), both in one nix-instantiate;
#   build: the work of a runner build without the plugin (`microvm-codegen generate`) against
#     with it (lib/build-runner.nix's loop writing the rendered files), M times each.
#
# Needs a Nix >= 2.24 with the plugin built against it:
#   MICROVM_TEST_NIX  its bin directory or prefix (default: nix-instantiate on PATH)
#   PLUGIN            libmicrovm_nix_plugin.so (default: target/release, built with NIX_C_API)
#   CODEGEN           microvm-codegen (default: target/release)
# Usage: checks/bench-plugin.sh [N] [M]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
calls=${1:-200}
builds=${2:-20}

nix_bin=${MICROVM_TEST_NIX:-$(dirname "$(command -v nix-instantiate)")}
[[ -x $nix_bin/nix-instantiate ]] || nix_bin=$nix_bin/bin
target=${CARGO_TARGET_DIR:-$repo/target}
plugin=${PLUGIN:-$target/release/libmicrovm_nix_plugin.so}
codegen=${CODEGEN:-$target/release/microvm-codegen}
if [[ ! -f $plugin || ! -x $codegen ]]; then
	echo "bench-plugin: building the plugin and the generator (release)" >&2
	NIX_C_API=${NIX_C_API:-${nix_bin%/bin}} cargo build --release -q -p microvm-nix-plugin -p microvm-codegen
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-plugin.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/conf"
printf 'build-users-group =\nplugin-files = %s\n' "$plugin" >"$work/conf/nix.conf"
nix_eval() {
	NIX_CONF_DIR=$work/conf XDG_CACHE_HOME=$work/cache NIX_PATH='' \
		"$nix_bin/nix-instantiate" --eval --strict --json --read-write-mode \
		--store "local?root=$work/root" "$@"
}
now() { date +%s%N; }

ratio() { python3 -c "import sys; a, b = map(float, sys.argv[1:]); print(f'{a / b:.2f}')" "$1" "$2"; }

printf '%-32s %14s %14s %9s %14s %14s %9s\n' fixture "render µs/call" "toJSON µs/call" ratio \
	"generate ms" "plugin ms" ratio
for fixture in "$repo"/codegen/tests/fixtures/ok/*-every-feature.json; do
	name=$(basename "$fixture" .json)
	eval_with() {
		local call=$1
		nix_eval -E "let spec = builtins.fromJSON (builtins.readFile $fixture); in
			builtins.foldl' (acc: i: acc + (($call) (spec // { hostName = \"vm\${toString i}\"; }))) 0
			(builtins.genList (i: i) $calls)" >/dev/null
	}
	start=$(now)
	eval_with 'x: builtins.length (builtins.attrNames (builtins.microvmRender x))'
	render_ns=$(($(now) - start))
	start=$(now)
	eval_with 'x: builtins.stringLength (builtins.toJSON x)'
	json_ns=$(($(now) - start))

	# The rendered files as the plugin's derivation gets them (one file per attribute, passAsFile)
	# and its manifest; then its builder's loop, as in lib/build-runner.nix.
	nix_eval -E "builtins.microvmRender (builtins.readFile $fixture)" >"$work/rendered.json"
	python3 - "$work/rendered.json" "$work/input" <<'EOF'
import json, os, sys
tree = json.load(open(sys.argv[1]))
os.makedirs(sys.argv[2], exist_ok=True)
with open(os.path.join(sys.argv[2], "manifest"), "w") as manifest:
    for index, (path, entry) in enumerate(sorted(tree.items())):
        if entry["type"] == "file":
            attr = f"microvmFile{index}"
            open(os.path.join(sys.argv[2], attr), "w").write(entry["text"])
            mode = "0755" if entry["executable"] else "0644"
            manifest.write(f"file\t{attr}\t{mode}\t{path}\n")
        else:
            manifest.write(f"symlink\t{entry['target']}\t-\t{path}\n")
EOF
	start=$(now)
	for _ in $(seq "$builds"); do
		rm -rf "$work/out"
		"$codegen" generate --spec "$fixture" --out "$work/out" 2>/dev/null
	done
	generate_ns=$(($(now) - start))
	start=$(now)
	for _ in $(seq "$builds"); do
		rm -rf "$work/out"
		out=$work/out input=$work/input bash -c '
			dirs=() files=() executables=() links=()
			while IFS=$'"'"'\t'"'"' read -r kind from mode path; do
				dirs+=("$out/${path%/*}")
				case $kind in
				file)
					files+=("$input/$from" "$out/$path")
					if [[ $mode == 0755 ]]; then executables+=("$out/$path"); fi
					;;
				symlink) links+=("$from" "$out/$path") ;;
				esac
			done <"$input/manifest"
			mkdir -p "${dirs[@]}"
			for ((i = 0; i < ${#files[@]}; i += 2)); do cp "${files[i]}" "${files[i + 1]}"; done
			for ((i = 0; i < ${#links[@]}; i += 2)); do ln -s "${links[i]}" "${links[i + 1]}"; done
			find "$out" -type f -exec chmod 0644 {} +
			if ((${#executables[@]})); then chmod 0755 "${executables[@]}"; fi'
	done
	plugin_ns=$(($(now) - start))

	printf '%-32s %14d %14d %9s %14d %14d %9s\n' "$name" \
		$((render_ns / calls / 1000)) $((json_ns / calls / 1000)) "$(ratio "$render_ns" "$json_ns")" \
		$((generate_ns / builds / 1000000)) $((plugin_ns / builds / 1000000)) "$(ratio "$generate_ns" "$plugin_ns")"
done
echo "render/toJSON: how much more evaluating a runner costs with the plugin (per call, process start included);"
echo "generate/plugin: how much more a runner build's own work costs without it (excluding building the generator)."
