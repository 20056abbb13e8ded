//! proxy-wasm glue: reads headers and properties, asks the [`crate::policy`] core, applies
//! the decision. Nothing here decides anything.

mod breaker;
mod budget;
mod host;
mod http;
mod log_lines;
mod metrics;
mod root;
mod shared;
mod shed;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // A panic traps the VM and Envoy's failure_policy takes over; make sure the reason reaches
    // the operator first.
    std::panic::set_hook(Box::new(|info| {
        // The lines this worker held would die with the VM.
        log_lines::write_held();
        host::log(LogLevel::Critical, &format!("fusebox: panic, this VM stops here: {info}"));
    }));
    proxy_wasm::set_root_context(|_| Box::new(root::FuseboxRoot::default()));
}}
