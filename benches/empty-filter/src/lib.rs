//! The emptiest proxy-wasm HTTP filter: a root context and a stream context with every
//! callback left at the SDK's default. What Envoy spends running it is the cost of a wasm
//! filter as such, the floor fusebox's own cost is compared with.

#[cfg(target_os = "wasi")]
mod filter {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::ContextType;

    struct EmptyRoot;
    struct EmptyStream;

    impl Context for EmptyRoot {}
    impl Context for EmptyStream {}
    impl HttpContext for EmptyStream {}

    impl RootContext for EmptyRoot {
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(EmptyStream))
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| Box::new(EmptyRoot));
    }}
}
