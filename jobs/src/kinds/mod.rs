//! Every job kind, listed once. Adding a kind: a file in this folder (what it takes: its
//! arguments, and for a public kind the tenant-owned ids among them), its handler in
//! [`crate::handlers`] (`impl Job`: policy and run), and one line in `job_kinds!` below, which gives the kind its stable wire name and puts it in
//! [`AnyJob`] (the typed body of `POST /v1/jobs`), [`ALL_KINDS`] and [`for_each_kind`] (the worker's
//! registration list). Kinds under `internal` are run by workers but not accepted from clients.

mod dispatch_plugin_task;
mod handle_webhook;
mod noop;
mod owned;
mod poll_etsy;
mod prune_jobs;
mod publish_listing;
mod refresh_token;
mod sync_orders;
mod withdraw_listing;

pub use dispatch_plugin_task::DispatchPluginTask;
pub use handle_webhook::{EBAY_ORDER_TOPIC, HandleWebhook};
pub use noop::{Noop, NoopFailure};
pub use owned::{Owned, Owns};
pub use poll_etsy::{PollEtsy, PollWhat};
pub use prune_jobs::PruneJobs;
pub use publish_listing::PublishListing;
pub use refresh_token::RefreshToken;
pub use sync_orders::SyncOrders;
pub use withdraw_listing::WithdrawListing;

use engine::{Job, Kind, Policy};

/// Visits every kind with its type, so generic code (worker registration) covers them all.
pub trait KindVisitor {
    fn visit<J: Job<Context = crate::JobContext>>(&mut self);
}

macro_rules! job_kinds {
    (public { $($ty:ident => $name:tt),* $(,)? } internal { $($ity:ident => $iname:tt),* $(,)? }) => {
        $( impl Kind for $ty { const KIND: &'static str = $name; } )*
        $( impl Kind for $ity { const KIND: &'static str = $iname; } )*

        /// Every kind's wire name.
        pub const ALL_KINDS: &[&str] = &[$($name,)* $($iname,)*];

        /// The kinds clients may enqueue.
        pub const PUBLIC_KINDS: &[&str] = &[$($name,)*];

        /// The kinds clients may enqueue, tagged by `kind`.
        #[derive(Debug, Clone)]
        #[cfg_attr(feature = "openapi", derive(poem_openapi::Union))]
        #[cfg_attr(feature = "openapi", oai(discriminator_name = "kind"))]
        pub enum AnyJob {
            $(
                #[cfg_attr(feature = "openapi", oai(mapping = $name))]
                $ty($ty),
            )*
        }

        impl AnyJob {
            pub fn kind(&self) -> &'static str {
                match self { $(Self::$ty(_) => $name,)* }
            }
            pub fn policy(&self) -> Policy {
                match self { $(Self::$ty(_) => <$ty as Job>::POLICY,)* }
            }
            /// Kind-specific checks beyond the schema.
            pub fn validate(&self) -> Result<(), String> {
                match self { $(Self::$ty(j) => j.validate(),)* }
            }
            /// The arguments as stored in `jobs.args`.
            pub fn args(&self) -> serde_json::Value {
                match self {
                    $(Self::$ty(j) => serde_json::to_value(j).expect("job args serialize"),)*
                }
            }
        }

        /// The argument field names of a public kind, from its OpenAPI schema (the API rejects
        /// any other field: poem-openapi's `deny_unknown_fields` would also reject `kind`).
        #[cfg(feature = "openapi")]
        pub fn field_names(kind: &str) -> Option<Vec<&'static str>> {
            match kind {
                $($name => Some(object_fields::<$ty>()),)*
                _ => None,
            }
        }

        /// Deserializes a public kind's arguments, naming the field at fault when they do not fit.
        pub fn check_args(kind: &str, args: serde_json::Value) -> Option<Result<(), String>> {
            match kind {
                $($name => Some(
                    serde_path_to_error::deserialize::<_, $ty>(args)
                        .map(|_| ())
                        .map_err(|e| match e.path().to_string().as_str() {
                            "." => e.inner().to_string(),
                            p => format!("{p}: {}", e.inner()),
                        }),
                ),)*
                _ => None,
            }
        }

        /// The argument fields of a public kind that name tenant-owned objects (`Job::IDS`).
        pub fn declared_ids(kind: &str) -> &'static [(&'static str, Owned)] {
            match kind {
                $($name => <$ty as Owns>::IDS,)*
                _ => &[],
            }
        }

        /// The declared policy of a kind, by name.
        pub fn declared_policy(kind: &str) -> Option<Policy> {
            match kind {
                $($name => Some(<$ty as Job>::POLICY),)*
                $($iname => Some(<$ity as Job>::POLICY),)*
                _ => None,
            }
        }

        pub fn for_each_kind(v: &mut impl KindVisitor) {
            $( v.visit::<$ty>(); )*
            $( v.visit::<$ity>(); )*
        }
    };
}

job_kinds! {
    public {
        PublishListing => "publish_listing",
        WithdrawListing => "withdraw_listing",
        SyncOrders => "sync_orders",
        RefreshToken => "refresh_token",
        PollEtsy => "poll_etsy",
        Noop => "noop",
    }
    internal {
        PruneJobs => "prune_jobs",
        // Enqueued with its plugin task, in the same transaction (`plugin::create_or_join`).
        DispatchPluginTask => "dispatch_plugin_task",
        // Enqueued with its inbox row, in the same transaction (`webhooks::receive`).
        HandleWebhook => "handle_webhook",
    }
}

#[cfg(feature = "openapi")]
fn object_fields<T: poem_openapi::types::Type>() -> Vec<&'static str> {
    let mut reg = poem_openapi::registry::Registry::new();
    T::register(&mut reg);
    reg.schemas
        .get(T::name().as_ref())
        .map(|s| s.properties.iter().map(|(k, _)| *k).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for k in ALL_KINDS {
            assert!(seen.insert(*k), "duplicate kind {k}");
            assert!(k.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{k}");
        }
    }

    /// A public kind whose arguments name an object must declare it in `Job::IDS`, or a seller
    /// could enqueue it with another tenant's id.
    #[cfg(feature = "openapi")]
    #[test]
    fn every_id_field_of_a_public_kind_is_declared_owned() {
        for k in PUBLIC_KINDS {
            let declared: Vec<&str> = declared_ids(k).iter().map(|(f, _)| *f).collect();
            let fields = field_names(k).unwrap();
            for f in &fields {
                assert!(
                    !f.ends_with("_id") || declared.contains(f),
                    "{k}.{f} names an object: declare it in {k}'s Job::IDS"
                );
            }
            for d in &declared {
                assert!(
                    fields.contains(d),
                    "{k} declares {d}, which it has no field for"
                );
            }
        }
    }

    #[test]
    fn every_kind_has_a_usable_policy() {
        for k in ALL_KINDS {
            let p = declared_policy(k).unwrap();
            assert!(
                p.max_attempts >= 1 && p.concurrency >= 1 && !p.timeout.is_zero(),
                "{k}"
            );
        }
    }
}
