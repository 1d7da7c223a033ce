//! The log fields of the request a task is serving (`request_id`, `trace_id`, `key_alias`, the
//! operation, the model, the team and the customer), which the log layer (`super::logs`) adds to
//! every line written while the request is served.
//!
//! They are a plain record in a task-local, not a `tracing` span: set for the request's future
//! ([`scope`]) and for each poll of what outlives its handler (a streamed body, [`Scoped`]),
//! filled as the request is read, and read only when a line is written. While nothing is logged
//! a request costs them one allocation and a few writes: no registry slot, no enter and exit on
//! each poll, no formatting. What they hold is printed on each line of the request, so never a
//! key: the key's alias, never the key.

use futures::Stream;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

/// One request's log fields, shared by what serves it: cloning is cheap.
#[derive(Clone)]
pub struct RequestFields(Arc<Fields>);

struct Fields {
    request_id: String,
    trace_id: Option<String>,
    operation: &'static str,
    /// Learnt once the request is read (its key, its body), after the request started.
    late: Mutex<Late>,
}

#[derive(Default)]
struct Late {
    key_alias: Option<String>,
    model: Option<String>,
    team_id: Option<String>,
    customer_id: Option<String>,
}

impl RequestFields {
    /// The fields of a request known when it starts: its id, operation (`gen_ai.operation.name`)
    /// and trace id.
    pub fn new(request_id: &str, operation: &'static str, trace_id: Option<String>) -> RequestFields {
        RequestFields(Arc::new(Fields {
            request_id: request_id.to_owned(),
            trace_id,
            operation,
            late: Mutex::new(Late::default()),
        }))
    }

    fn late(&self) -> MutexGuard<'_, Late> {
        // A panic while the lock was held leaves fields that are still whole: go on with them.
        self.0.late.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the model asked for (`gen_ai.request.model`).
    pub fn set_model(&self, model: &str) {
        self.late().model = Some(model.to_owned());
    }

    /// Sets who is asking: those of the key's alias, team and customer that are given.
    pub fn set_principal(&self, key_alias: Option<&str>, team_id: Option<&str>, customer_id: Option<&str>) {
        let mut guard = self.late();
        let late = &mut *guard;
        for (field, value) in
            [(&mut late.key_alias, key_alias), (&mut late.team_id, team_id), (&mut late.customer_id, customer_id)]
        {
            if let Some(value) = value {
                *field = Some(value.to_owned());
            }
        }
    }

    /// Calls `f` with the name and value of each field set, in the order the text format
    /// prints them.
    pub fn for_each(&self, mut f: impl FnMut(&'static str, &str)) {
        f("request_id", &self.0.request_id);
        if let Some(id) = &self.0.trace_id {
            f("trace_id", id);
        }
        let late = self.late();
        if let Some(alias) = &late.key_alias {
            f("key_alias", alias);
        }
        f("gen_ai.operation.name", self.0.operation);
        let rest = [
            ("gen_ai.request.model", &late.model),
            ("tollgate.team_id", &late.team_id),
            ("tollgate.customer_id", &late.customer_id),
        ];
        for (name, value) in rest {
            if let Some(value) = value {
                f(name, value);
            }
        }
    }
}

tokio::task_local! {
    /// The fields of the request the task serves.
    static CURRENT: RequestFields;
}

/// Runs `task` with `fields` as its current request's.
pub fn scope<F: std::future::Future>(fields: RequestFields, task: F) -> impl std::future::Future<Output = F::Output> {
    CURRENT.scope(fields, task)
}

/// The fields of the request the task serves, when it serves one.
pub fn current() -> Option<RequestFields> {
    CURRENT.try_with(RequestFields::clone).ok()
}

/// Runs `f` on the fields of the request the task serves, when it serves one. `f` must not
/// enter a request's scope (it runs while the task-local is borrowed).
pub fn with_current<R>(f: impl FnOnce(&RequestFields) -> R) -> Option<R> {
    CURRENT.try_with(f).ok()
}

/// A stream polled, and dropped, with the fields of the request it answers current: a streamed
/// body, which the server polls after the handler has returned, out of the request's scope.
pub struct Scoped<S> {
    inner: Option<S>,
    fields: Option<RequestFields>,
}

impl<S> Scoped<S> {
    /// `inner` with the task's current request fields (none outside a request: then it is
    /// polled as it is).
    pub fn current(inner: S) -> Scoped<S> {
        Scoped { inner: Some(inner), fields: current() }
    }

    /// Runs `f` on the inner stream within the fields' scope.
    fn within<R>(&mut self, f: impl FnOnce(&mut Option<S>) -> R) -> R {
        match &self.fields {
            Some(fields) => CURRENT.sync_scope(fields.clone(), || f(&mut self.inner)),
            None => f(&mut self.inner),
        }
    }
}

impl<S: Stream + Unpin> Stream for Scoped<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.get_mut().within(|inner| match inner {
            Some(inner) => Pin::new(inner).poll_next(cx),
            None => Poll::Ready(None),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.as_ref().map_or((0, Some(0)), Stream::size_hint)
    }
}

impl<S> Drop for Scoped<S> {
    fn drop(&mut self) {
        // What the stream logs as it ends (its metering, when the client went away) is the
        // request's too.
        self.within(|inner| drop(inner.take()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn pairs(fields: &RequestFields) -> Vec<(String, String)> {
        let mut out = Vec::new();
        fields.for_each(|name, value| out.push((name.to_owned(), value.to_owned())));
        out
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn fields_are_listed_once_set_and_only_then() {
        let fields = RequestFields::new("req-1", "chat", None);
        assert_eq!(pairs(&fields), owned(&[("request_id", "req-1"), ("gen_ai.operation.name", "chat")]));
        let fields = RequestFields::new("req-2", "embeddings", Some("4bf92f3577b34da6a3ce929d0e0e4736".into()));
        fields.set_principal(Some("checkout"), None, Some("cust-9"));
        fields.set_model("gpt-4o-mini");
        // A later call sets what it is given and leaves the rest.
        fields.set_principal(None, Some("team-a"), None);
        assert_eq!(
            pairs(&fields),
            owned(&[
                ("request_id", "req-2"),
                ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
                ("key_alias", "checkout"),
                ("gen_ai.operation.name", "embeddings"),
                ("gen_ai.request.model", "gpt-4o-mini"),
                ("tollgate.team_id", "team-a"),
                ("tollgate.customer_id", "cust-9"),
            ])
        );
    }

    #[test]
    fn the_current_fields_are_those_of_the_scope_and_shared_with_it() {
        assert!(current().is_none());
        let fields = RequestFields::new("req-3", "chat", None);
        let seen = futures::executor::block_on(scope(fields.clone(), async {
            // Filled inside the request, read by whoever holds the fields.
            with_current(|f| f.set_model("m")).unwrap();
            current().map(|f| pairs(&f))
        }));
        assert_eq!(seen, Some(pairs(&fields)));
        assert!(pairs(&fields).contains(&("gen_ai.request.model".into(), "m".into())));
        assert!(with_current(|_| ()).is_none());
    }

    /// Notes the request id current at each poll and at its drop.
    struct Probe(Arc<Mutex<Vec<Option<String>>>>, u8);

    fn note(seen: &Mutex<Vec<Option<String>>>) {
        let id = with_current(|f| {
            let mut id = None;
            f.for_each(|name, value| {
                if name == "request_id" {
                    id = Some(value.to_owned());
                }
            });
            id
        });
        seen.lock().unwrap().push(id.flatten());
    }

    impl Stream for Probe {
        type Item = u8;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<u8>> {
            note(&self.0);
            self.1 = self.1.saturating_sub(1);
            Poll::Ready((self.1 > 0).then_some(self.1))
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            note(&self.0);
        }
    }

    #[test]
    fn a_scoped_stream_is_polled_and_dropped_within_its_request() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fields = RequestFields::new("req-4", "chat", None);
        // Made inside the request, polled and dropped outside it, as a streamed body is.
        let stream = futures::executor::block_on(scope(fields, async { Scoped::current(Probe(seen.clone(), 3)) }));
        let items: Vec<u8> = futures::executor::block_on(stream.collect());
        assert_eq!(items, [2, 1]);
        let id = Some("req-4".to_owned());
        assert_eq!(*seen.lock().unwrap(), [id.clone(), id.clone(), id.clone(), id]);
        assert!(current().is_none());

        // Made outside a request: polled as it is.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let items: Vec<u8> = futures::executor::block_on(Scoped::current(Probe(seen.clone(), 2)).collect());
        assert_eq!(items, [1]);
        assert_eq!(*seen.lock().unwrap(), [None, None, None]);
    }
}
