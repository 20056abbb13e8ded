//! Route metadata, remembered per route name for a moment.
//!
//! Reading a property costs a trip through Envoy's attribute machinery, among the dearest host
//! calls (see the overhead benchmark's host-call table). A route's `filter_metadata.fusebox.policy`
//! only changes when the route configuration does, so each worker reads it once per route and
//! forgets everything on every stats flush (once a second): a changed route takes effect
//! within a second, and the table never outgrows the routes seen in one second.

use std::cell::RefCell;
use std::collections::HashMap;

/// Most routes remembered between two flushes; beyond, lookups go to the host every time.
const MAX_ROUTES: usize = 4096;

/// The metadata policy of each route seen since the last flush (`None`: the route has none).
#[derive(Default)]
pub struct RouteMetadataCache {
    routes: RefCell<HashMap<String, Option<Vec<u8>>>>,
}

impl RouteMetadataCache {
    /// The route's metadata policy, from the cache or from `read` (then remembered).
    pub fn get_or_read(
        &self,
        route: &str,
        read: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        if let Some(cached) = self
            .routes
            .try_borrow()
            .ok()
            .and_then(|routes| routes.get(route).cloned())
        {
            return cached;
        }
        let value = read();
        if let Ok(mut routes) = self.routes.try_borrow_mut() {
            if routes.len() < MAX_ROUTES {
                routes.insert(route.to_owned(), value.clone());
            }
        }
        value
    }

    /// Forgets every route.
    pub fn clear(&self) {
        if let Ok(mut routes) = self.routes.try_borrow_mut() {
            routes.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_route_once_until_cleared() {
        let cache = RouteMetadataCache::default();
        let reads = std::cell::Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            Some(b"payments".to_vec())
        };
        assert_eq!(cache.get_or_read("a", read), Some(b"payments".to_vec()));
        assert_eq!(cache.get_or_read("a", read), Some(b"payments".to_vec()));
        assert_eq!(reads.get(), 1);
        assert_eq!(cache.get_or_read("b", || None), None);
        assert_eq!(
            cache.get_or_read("b", read),
            None,
            "absence is remembered too"
        );
        cache.clear();
        assert_eq!(cache.get_or_read("b", read), Some(b"payments".to_vec()));
        assert_eq!(reads.get(), 2);
    }
}
