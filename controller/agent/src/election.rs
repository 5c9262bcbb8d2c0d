//! One agent at a time writes the status of the shared objects (ProxyConfig, SourceBlocklists),
//! elected through a coordination.k8s.io Lease as Kubernetes' own controllers are: with every
//! agent writing them in turn, a 1,000-node cluster would write each shared object hundreds of
//! times a minute, and the last writer would decide what it says.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};

/// How long a holder that stops renewing keeps the lease.
pub const LEASE_SECONDS: i32 = 15;

pub struct Election {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// The lease as this agent last wrote it: the holder renews from it without reading first
    /// (a conflict means someone else wrote it, and the next round reads again).
    held: Option<Lease>,
}

/// What the lease says, as far as deciding goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Nobody,
    Me,
    Other { expired: bool },
}

/// Who holds `spec` at `now`.
pub fn holder(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Holder {
    let Some(spec) = spec else { return Holder::Nobody };
    match spec.holder_identity.as_deref() {
        None | Some("") => Holder::Nobody,
        Some(h) if h == identity => Holder::Me,
        Some(_) => {
            let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS)));
            let expired = spec.renew_time.as_ref().is_none_or(|t| t.0 + duration < now);
            Holder::Other { expired }
        }
    }
}

impl Election {
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str) -> Self {
        Election { api: Api::namespaced(client, namespace), name: name.into(), identity: identity.into(), held: None }
    }

    /// Takes or renews the lease; true while this agent holds it. A lost race (another agent
    /// wrote the lease first) is simply not leading.
    pub async fn lead(&mut self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = match self.held.take() {
            Some(lease) => Some(lease),
            None => self.api.get_opt(&self.name).await?,
        };
        let taking = |transitions: i32| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let outcome = match current {
            None => {
                let lease = Lease { metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() }, spec: Some(taking(0)) };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                let transitions = lease.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0);
                match holder(lease.spec.as_ref(), &self.identity, now) {
                    Holder::Other { expired: false } => return Ok(false),
                    Holder::Me => {
                        let spec = lease.spec.get_or_insert_with(Default::default);
                        spec.renew_time = Some(MicroTime(now));
                        spec.lease_duration_seconds = Some(LEASE_SECONDS);
                    }
                    Holder::Nobody | Holder::Other { expired: true } => lease.spec = Some(taking(transitions + 1)),
                }
                // The resourceVersion it was read (or last written) with makes this a compare-and-swap.
                self.api.replace(&self.name, &PostParams::default(), &lease).await
            }
        };
        match outcome {
            Ok(written) => {
                self.held = Some(written);
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed_secs_ago: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(MicroTime(Timestamp::now() - SignedDuration::from_secs(renewed_secs_ago))),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_is_taken_only_when_free_or_expired() {
        let now = Timestamp::now();
        assert_eq!(holder(None, "n1", now), Holder::Nobody);
        assert_eq!(holder(Some(&spec("n1", 100)), "n1", now), Holder::Me, "its own lease, however old, is renewed");
        assert_eq!(holder(Some(&spec("n2", 3)), "n1", now), Holder::Other { expired: false });
        assert_eq!(holder(Some(&spec("n2", 16)), "n1", now), Holder::Other { expired: true });
        assert_eq!(holder(Some(&LeaseSpec::default()), "n1", now), Holder::Nobody);
    }
}
