# Fusebox's everyday recipes; each is the same command as its cargo alias.

# Build the plugin and run the demo: Envoy + fusebox + upstream on 127.0.0.1:10000.
demo:
    cargo demo

# Provision everything and run the whole test suite (what CI runs).
test:
    cargo test-all

# Fuzz every target in fuzz/ for `seconds` each (installs cargo-fuzz into .tools/; needs nightly).
fuzz seconds="60":
    cargo harness fuzz --seconds {{seconds}}

# Install wasm targets, Envoy and the wasm test runner into .tools/.
provision:
    cargo harness provision

# Build fusebox.wasm (release, wasm32-wasip1) and print its path.
build:
    cargo harness build

# Fault-injection scenarios against real Envoy; reports in reports/chaos/ (args: --short, --policy FILE, names).
chaos *args:
    cargo harness chaos {{args}}

# Rewrite the checked-in demo Envoy config, Istio WasmPlugin and docker-compose files after changing their description.
render:
    cargo harness render

# Regenerate the checked-in JSON Schema after changing the config types.
schema:
    FUSEBOX_UPDATE_SCHEMA=1 cargo test -p fusebox-policy-schema --test schema

# Criterion micro-benchmarks of the policy core.
bench:
    cargo bench -p fusebox-benches

# End-to-end overhead in Envoy against no filter, an empty wasm filter, Envoy-native filters (args: --quick, --compare OTHER.wasm, --instructions).
overhead *args:
    cargo harness bench {{args}}

# Run the controllable test upstream alone.
upstream addr="127.0.0.1:8081":
    cargo harness upstream {{addr}}
