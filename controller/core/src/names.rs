//! The identities the planner works with: which object (namespace and name) and which network
//! (a CIDR). Each has one type and one parser, so the default-namespace rule and the prefix match
//! are written once.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A name as the planner keeps it: one shared copy of the text, however many maps hold it (a
/// Service's key is in the index, the planner's parts, the layout, the claims on its
/// addresses...).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Name(Arc<str>);

impl Name {
    /// The one copy of a name many objects repeat (namespaces, node names, zones): every use
    /// shares it. Names no object uses any more are forgotten as the table grows.
    pub fn shared(text: &str) -> Name {
        static TABLE: Mutex<Option<(HashSet<Name>, usize)>> = Mutex::new(None);
        let mut guard = TABLE.lock().unwrap_or_else(|e| e.into_inner());
        let (table, sweep_at) = guard.get_or_insert_with(|| (HashSet::new(), 1024));
        if let Some(name) = table.get(text) {
            return name.clone();
        }
        if table.len() >= *sweep_at {
            table.retain(|n| Arc::strong_count(&n.0) > 1);
            *sweep_at = (table.len() * 2).max(1024);
        }
        let name = Name::from(text);
        table.insert(name.clone());
        name
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name(Arc::from(s))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        Name(Arc::from(s))
    }
}

impl From<&String> for Name {
    fn from(s: &String) -> Name {
        Name(Arc::from(s.as_str()))
    }
}

impl From<&Name> for Name {
    fn from(n: &Name) -> Name {
        n.clone()
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// A namespaced object: a Service, an EndpointSlice, or the Service an EndpointSlice's label
/// names (an EndpointSlice without that label groups under its namespace and name "").
///
/// Ordered `kube-system` first, then by namespace and name: the order plans lay Services out in,
/// so when a map is full the cluster's own Services (DNS above all) are the last to be refused,
/// and every node refuses the same ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub namespace: Name,
    pub name: Name,
}

impl Ord for ObjectKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        fn rank(k: &ObjectKey) -> (bool, &str, &str) {
            (k.namespace != "kube-system", &k.namespace, &k.name)
        }
        rank(self).cmp(&rank(other))
    }
}

impl PartialOrd for ObjectKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl ObjectKey {
    pub fn new(namespace: impl AsRef<str>, name: impl Into<Name>) -> ObjectKey {
        ObjectKey { namespace: Name::shared(namespace.as_ref()), name: name.into() }
    }

    /// A manifest may leave the namespace out or empty: that means `default`, as in the API.
    pub fn of(meta: &ObjectMeta) -> ObjectKey {
        ObjectKey::new(Self::namespace_of(meta), meta.name.as_deref().unwrap_or_default())
    }

    /// The same object's namespace with another name (a slice's Service).
    pub fn namespace_of(meta: &ObjectMeta) -> &str {
        meta.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or("default")
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An address prefix: loadBalancerSourceRanges, externalIPCIDRs, SourceBlocklist entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub bits: u8,
}

impl Cidr {
    /// `203.0.113.0/24` or `2001:db8::/48` (surrounding blanks allowed, as kube-proxy trims
    /// loadBalancerSourceRanges); host bits may be set, they are ignored when matching.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, bits) = text.trim().split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let bits: u8 = bits.parse().ok()?;
        (bits <= if addr.is_ipv4() { 32 } else { 128 }).then_some(Cidr { addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (ip, self.addr) {
            (IpAddr::V4(a), IpAddr::V4(n)) => self.bits == 0 || (u32::from(a) ^ u32::from(n)) >> (32 - u32::from(self.bits)) == 0,
            (IpAddr::V6(a), IpAddr::V6(n)) => self.bits == 0 || (u128::from(a) ^ u128::from(n)) >> (128 - u32::from(self.bits)) == 0,
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_or_empty_namespace_is_default() {
        let meta = |ns: Option<&str>| ObjectMeta { namespace: ns.map(Into::into), name: Some("web".into()), ..Default::default() };
        assert_eq!(ObjectKey::of(&meta(None)), ObjectKey::new("default", "web"));
        assert_eq!(ObjectKey::of(&meta(Some(""))), ObjectKey::new("default", "web"));
        assert_eq!(ObjectKey::of(&meta(Some("a"))).to_string(), "a/web");
    }

    #[test]
    fn prefixes_match_by_their_bits_only() {
        let c = Cidr::parse(" 192.0.2.77/24 ").unwrap();
        assert!(c.contains("192.0.2.1".parse().unwrap()));
        assert!(!c.contains("192.0.3.1".parse().unwrap()));
        assert!(!c.contains("::ffff:192.0.2.1".parse().unwrap()), "families never match");
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("203.0.113.9".parse().unwrap()));
        assert!(Cidr::parse("2001:db8::/32").unwrap().contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(Cidr::parse("2001:db8::1/128").unwrap().contains("2001:db8::1".parse().unwrap()));
        for bad in ["192.0.2.0/33", "192.0.2.0", "nope/8", "::/129"] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }
}
