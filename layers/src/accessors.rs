//! The accessors every layer service has for the service it wraps.

/// Writes a layer service's `get_ref`, `get_mut` and `into_inner`, the three ways to reach the
/// service it wraps, once for all the layers.
///
/// Invoke it inside the service's inherent `impl` block, naming the type of its `inner` field:
///
/// ```text
/// impl<S> Workspace<S> {
///     inner_accessors!(S);
/// }
/// ```
///
/// Every service in this crate keeps the wrapped service in a field called `inner`; the methods
/// come with their doc comments, so they read in rustdoc as if written by hand.
macro_rules! inner_accessors {
    ($inner:ty) => {
        /// The inner service.
        pub fn get_ref(&self) -> &$inner {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut $inner {
            &mut self.inner
        }

        /// Unwraps the inner service.
        pub fn into_inner(self) -> $inner {
            self.inner
        }
    };
}

pub(crate) use inner_accessors;
