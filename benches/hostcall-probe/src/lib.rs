//! A probe for the overhead benchmark: on every request it makes one kind of proxy-wasm host
//! call a fixed number of times and does nothing else. Measured against the same probe making
//! no call, it gives what Envoy spends per host call, which is what a filter's cost is made of
//! (fusebox's decisions themselves take nanoseconds; see the criterion benches).
//!
//! Configuration: `"<call> <count>"`, e.g. `"header_get 20"`; see [`Call`].

/// The host calls the probe can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// No call: the baseline.
    None,
    /// A request header that is there (the host also calls back into wasm to allocate).
    HeaderGet,
    /// A request header that is not there.
    HeaderGetMissing,
    /// All request headers at once.
    HeaderGetAll,
    /// Setting a request header.
    HeaderSet,
    /// A property (`xds.route_name`).
    Property,
    /// Reading a shared-data key.
    SharedGet,
    /// A shared-data compare-and-swap: read, then write at the version read.
    SharedUpdate,
    /// A log line at info level, about 120 bytes.
    Log,
    /// A log line at info level, about 400 bytes: as long as fusebox's request line with every
    /// feature on.
    LogLong,
    /// The host clock.
    Time,
    /// One each of [`Call::MIX`] in turn, as a real request makes them: each kind's code path
    /// in Envoy runs once, not twenty times in a row with warm caches.
    Mix,
}

impl Call {
    /// Every call, in report order.
    pub const ALL: [Call; 12] = [
        Call::None,
        Call::HeaderGet,
        Call::HeaderGetMissing,
        Call::HeaderGetAll,
        Call::HeaderSet,
        Call::Property,
        Call::SharedGet,
        Call::SharedUpdate,
        Call::Log,
        Call::LogLong,
        Call::Time,
        Call::Mix,
    ];

    /// The kinds a [`Call::Mix`] makes, one of each: what fusebox asks of Envoy per request.
    pub const MIX: [Call; 5] = [
        Call::HeaderGetAll,
        Call::Property,
        Call::HeaderSet,
        Call::SharedUpdate,
        Call::LogLong,
    ];

    /// The name used in the configuration and the report.
    pub fn name(self) -> &'static str {
        match self {
            Call::None => "none",
            Call::HeaderGet => "header_get",
            Call::HeaderGetMissing => "header_get_missing",
            Call::HeaderGetAll => "header_get_all",
            Call::HeaderSet => "header_set",
            Call::Property => "property",
            Call::SharedGet => "shared_get",
            Call::SharedUpdate => "shared_update",
            Call::Log => "log",
            Call::LogLong => "log_long",
            Call::Time => "time",
            Call::Mix => "mix",
        }
    }

    /// Parses `"<call> <count>"`.
    pub fn parse_config(config: &str) -> Option<(Call, u32)> {
        let mut words = config.split_whitespace();
        let name = words.next()?;
        let call = Call::ALL.into_iter().find(|call| call.name() == name)?;
        let count = words.next().map_or(Some(0), |count| count.parse().ok())?;
        Some((call, count))
    }
}

#[cfg(target_os = "wasi")]
mod filter {
    use super::Call;
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

    const SHARED_KEY: &str = "fusebox.probe";
    const LOG_LINE: &str = r#"{"correlation_id":"01a20810-084d-740a-a900-7fe506a9ea28","route":"bench","decision":"allow","status":200,"duration_ms":0.5}"#;

    const LOG_LINE_LONG: &str = r#"{"correlation_id":"01a20816-a438-7307-9aeb-2d336744e822","correlation":"generated","traceparent":"generated","route":"checkout","policy":"checkout","policy_source":"route_metadata","mode":"enforce","decision":"allow","remaining_ms":4999.643,"caller_deadline_ms":5000.0,"retries":1,"breaker":"admitted","breaker_outcome":"success","priority":"normal","tokens_left":999999,"status":200,"duration_ms":0.87}"#;

    struct ProbeRoot {
        call: Call,
        count: u32,
    }

    struct ProbeStream {
        call: Call,
        count: u32,
    }

    impl Context for ProbeRoot {}
    impl Context for ProbeStream {}

    impl HttpContext for ProbeStream {
        fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
            for _ in 0..self.count {
                make(self.call);
            }
            Action::Continue
        }
    }

    fn make(call: Call) {
        let headers = MapType::HttpRequestHeaders;
        match call {
            Call::None => {}
            Call::HeaderGet => {
                let _ = hostcalls::get_map_value_bytes(headers, ":path");
            }
            Call::HeaderGetMissing => {
                let _ = hostcalls::get_map_value_bytes(headers, "x-absent");
            }
            Call::HeaderGetAll => {
                let _ = hostcalls::get_map_bytes(headers);
            }
            Call::HeaderSet => {
                let _ = hostcalls::set_map_value_bytes(headers, "x-probe", Some(b"1"));
            }
            Call::Property => {
                let _ = hostcalls::get_property(vec!["xds", "route_name"]);
            }
            Call::SharedGet => {
                let _ = hostcalls::get_shared_data(SHARED_KEY);
            }
            Call::SharedUpdate => {
                let cas = hostcalls::get_shared_data(SHARED_KEY)
                    .ok()
                    .and_then(|(_, cas)| cas);
                let _ = hostcalls::set_shared_data(SHARED_KEY, Some(b"12345678"), cas);
            }
            Call::Log => {
                let _ = hostcalls::log(LogLevel::Info, LOG_LINE);
            }
            Call::LogLong => {
                let _ = hostcalls::log(LogLevel::Info, LOG_LINE_LONG);
            }
            Call::Time => {
                let _ = hostcalls::get_current_time();
            }
            Call::Mix => Call::MIX.into_iter().for_each(make),
        }
    }

    impl RootContext for ProbeRoot {
        fn on_configure(&mut self, _configuration_size: usize) -> bool {
            let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
                .ok()
                .flatten()
                .unwrap_or_default();
            match Call::parse_config(&String::from_utf8_lossy(&config)) {
                Some((call, count)) => {
                    self.call = call;
                    self.count = count;
                    true
                }
                None => false,
            }
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(ProbeStream {
                call: self.call,
                count: self.count,
            }))
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| Box::new(ProbeRoot { call: Call::None, count: 0 }));
    }}
}

#[cfg(test)]
mod tests {
    use super::Call;

    #[test]
    fn configurations_parse_and_bad_ones_are_refused() {
        assert_eq!(
            Call::parse_config("header_get 20"),
            Some((Call::HeaderGet, 20))
        );
        assert_eq!(Call::parse_config("none"), Some((Call::None, 0)));
        assert_eq!(Call::parse_config("teleport 3"), None);
        assert_eq!(Call::parse_config("log many"), None);
        assert_eq!(Call::parse_config(""), None);
        for call in Call::ALL {
            assert_eq!(Call::parse_config(call.name()), Some((call, 0)));
        }
    }
}
