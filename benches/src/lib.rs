//! Criterion micro-benchmarks of the policy core live in `benches/`; this library only gives
//! them a crate to belong to. Run them with `cargo bench -p fusebox-benches`.
