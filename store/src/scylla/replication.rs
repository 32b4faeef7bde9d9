//! The keyspace's replication, parsed: a class and its factors, never user
//! text pasted into DDL. `migrate` renders the `CREATE KEYSPACE` map from
//! this value alone, so what reaches the database is one of two fixed
//! shapes with validated names and numbers.
//!
//! Two spellings are accepted: a shorthand (`SimpleStrategy:3`,
//! `NetworkTopologyStrategy:dc1=3,dc2=3`) and, for configurations written
//! before it, the CQL map literal (`{'class': 'SimpleStrategy',
//! 'replication_factor': 1}`), read by a small parser of its own.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The largest replication factor accepted (per data center).
pub const MAX_FACTOR: u8 = 64;
/// The longest data center name accepted.
pub const MAX_DC_NAME: usize = 64;

/// How many copies of each row the database keeps, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// `factor` copies, placed without regard to data centers.
    Simple { factor: u8 },
    /// Copies per data center (`{dc: factor}`), and optionally a factor
    /// for every data center not named (`replication_factor`, Cassandra 4+).
    NetworkTopology { default: Option<u8>, datacenters: BTreeMap<String, u8> },
}

impl Default for Replication {
    /// One copy: a single-node database, as in development.
    fn default() -> Self {
        Replication::Simple { factor: 1 }
    }
}

/// Why a replication setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}; expected e.g. `SimpleStrategy:3` or `NetworkTopologyStrategy:dc1=3,dc2=3`")]
pub struct ReplicationError(String);

fn refuse<T>(reason: impl Into<String>) -> Result<T, ReplicationError> {
    Err(ReplicationError(reason.into()))
}

fn factor(what: &str, text: &str) -> Result<u8, ReplicationError> {
    match text.trim().parse::<u8>() {
        Ok(n) if (1..=MAX_FACTOR).contains(&n) => Ok(n),
        _ => refuse(format!("{what} must be a whole number from 1 to {MAX_FACTOR}, not `{}`", text.trim())),
    }
}

/// Data center names are the snitch's: letters, digits, `_`, `-`, `.`.
fn dc_name(name: &str) -> Result<String, ReplicationError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_DC_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if ok {
        Ok(name.to_owned())
    } else {
        refuse(format!("data center name `{name}` must be 1 to {MAX_DC_NAME} letters, digits, '_', '-' or '.'"))
    }
}

fn class(name: &str) -> Result<bool, ReplicationError> {
    // true: NetworkTopologyStrategy.
    match name.strip_prefix("org.apache.cassandra.locator.").unwrap_or(name) {
        "SimpleStrategy" => Ok(false),
        "NetworkTopologyStrategy" => Ok(true),
        other => refuse(format!("replication class `{other}` is not SimpleStrategy or NetworkTopologyStrategy")),
    }
}

impl Replication {
    /// The map literal of `CREATE KEYSPACE ... WITH replication = <this>`.
    /// Every name in it passed [`dc_name`], so quoting cannot be escaped;
    /// quotes are doubled all the same.
    pub fn cql(&self) -> String {
        let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
        match self {
            Replication::Simple { factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}")
            }
            Replication::NetworkTopology { default, datacenters } => {
                let mut map = String::from("{'class': 'NetworkTopologyStrategy'");
                if let Some(n) = default {
                    map.push_str(&format!(", 'replication_factor': {n}"));
                }
                for (dc, n) in datacenters {
                    map.push_str(&format!(", {}: {n}", quote(dc)));
                }
                map.push('}');
                map
            }
        }
    }

    fn build(nts: bool, default: Option<u8>, datacenters: BTreeMap<String, u8>) -> Result<Self, ReplicationError> {
        if !nts {
            if !datacenters.is_empty() {
                return refuse("SimpleStrategy takes only a replication factor, not data centers");
            }
            let Some(factor) = default else {
                return refuse("SimpleStrategy needs a replication factor");
            };
            return Ok(Replication::Simple { factor });
        }
        if default.is_none() && datacenters.is_empty() {
            return refuse("NetworkTopologyStrategy needs at least one data center (`dc=N`)");
        }
        Ok(Replication::NetworkTopology { default, datacenters })
    }

    /// `SimpleStrategy:3`, `NetworkTopologyStrategy:dc1=3,dc2=3` (a bare
    /// number among them is the factor of every other data center).
    fn parse_shorthand(s: &str) -> Result<Self, ReplicationError> {
        let (name, rest) = s.split_once(':').unwrap_or((s, ""));
        let nts = class(name.trim())?;
        if !nts {
            return Self::build(false, Some(factor("the replication factor", rest)?), BTreeMap::new());
        }
        let (mut default, mut dcs) = (None, BTreeMap::new());
        for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((dc, n)) => {
                    let dc = dc_name(dc.trim())?;
                    let n = factor(&format!("the factor of `{dc}`"), n)?;
                    if dcs.insert(dc.clone(), n).is_some() {
                        return refuse(format!("data center `{dc}` is named twice"));
                    }
                }
                None if default.is_none() => default = Some(factor("the replication factor", part)?),
                None => return refuse("more than one default replication factor"),
            }
        }
        Self::build(true, default, dcs)
    }

    /// The CQL map literal, as `migrate` took it before: string keys,
    /// string or integer values, nothing after the closing brace.
    fn parse_map(s: &str) -> Result<Self, ReplicationError> {
        let entries = MapLiteral::parse(s)?;
        let mut class_name = None;
        let (mut default, mut dcs) = (None, BTreeMap::new());
        for (key, value) in entries {
            match key.as_str() {
                "class" => class_name = Some(value),
                "replication_factor" => default = Some(factor("replication_factor", &value)?),
                dc => {
                    let dc = dc_name(dc)?;
                    let n = factor(&format!("the factor of `{dc}`"), &value)?;
                    if dcs.insert(dc.clone(), n).is_some() {
                        return refuse(format!("data center `{dc}` is named twice"));
                    }
                }
            }
        }
        let Some(class_name) = class_name else {
            return refuse("the map has no 'class'");
        };
        Self::build(class(&class_name)?, default, dcs)
    }
}

impl FromStr for Replication {
    type Err = ReplicationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.starts_with('{') { Self::parse_map(s) } else { Self::parse_shorthand(s) }
    }
}

/// The shorthand form, which [`FromStr`] reads back.
impl fmt::Display for Replication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replication::Simple { factor } => write!(f, "SimpleStrategy:{factor}"),
            Replication::NetworkTopology { default, datacenters } => {
                let mut parts: Vec<String> = default.iter().map(u8::to_string).collect();
                parts.extend(datacenters.iter().map(|(dc, n)| format!("{dc}={n}")));
                write!(f, "NetworkTopologyStrategy:{}", parts.join(","))
            }
        }
    }
}

/// A tokenizer and parser for `{'key': 'value' | number, ...}` and nothing
/// else (no nesting, no identifiers, no comments).
struct MapLiteral<'a> {
    rest: &'a str,
}

impl<'a> MapLiteral<'a> {
    fn parse(s: &'a str) -> Result<Vec<(String, String)>, ReplicationError> {
        let mut p = MapLiteral { rest: s };
        p.expect('{')?;
        let mut entries: Vec<(String, String)> = Vec::new();
        if !p.eat('}') {
            loop {
                let key = p.string()?;
                p.expect(':')?;
                let value = if p.peek() == Some('\'') { p.string()? } else { p.number()? };
                if entries.iter().any(|(k, _)| *k == key) {
                    return refuse(format!("key '{key}' appears twice"));
                }
                entries.push((key, value));
                if p.eat('}') {
                    break;
                }
                p.expect(',')?;
            }
        }
        if !p.rest.trim().is_empty() {
            return refuse(format!("unexpected text after the map: `{}`", p.rest.trim()));
        }
        Ok(entries)
    }

    fn peek(&mut self) -> Option<char> {
        self.rest = self.rest.trim_start();
        self.rest.chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.rest = &self.rest[1..];
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), ReplicationError> {
        if self.eat(c) {
            Ok(())
        } else {
            let found = self.rest.chars().next().map(|c| format!("`{c}`")).unwrap_or_else(|| "the end".into());
            refuse(format!("expected `{c}` in the replication map, found {found}"))
        }
    }

    /// `'...'`, with `''` for a quote inside.
    fn string(&mut self) -> Result<String, ReplicationError> {
        self.expect('\'')?;
        let mut out = String::new();
        let mut chars = self.rest.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if self.rest[i + 1..].starts_with('\'') {
                    out.push('\'');
                    chars.next();
                    continue;
                }
                self.rest = &self.rest[i + 1..];
                return Ok(out);
            }
            out.push(c);
        }
        refuse("a quoted string in the replication map is not closed")
    }

    fn number(&mut self) -> Result<String, ReplicationError> {
        self.peek();
        let end = self.rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(self.rest.len());
        if end == 0 {
            return refuse("expected a quoted string or a number in the replication map");
        }
        let (n, rest) = self.rest.split_at(end);
        self.rest = rest;
        Ok(n.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Replication, String> {
        s.parse::<Replication>().map_err(|e| e.to_string())
    }

    fn nts(default: Option<u8>, dcs: &[(&str, u8)]) -> Replication {
        Replication::NetworkTopology { default, datacenters: dcs.iter().map(|(d, n)| (d.to_string(), *n)).collect() }
    }

    #[test]
    fn the_old_default_map_literal_still_reads_and_renders_the_same() {
        let old = "{'class': 'SimpleStrategy', 'replication_factor': 1}";
        assert_eq!(parse(old).unwrap(), Replication::Simple { factor: 1 });
        assert_eq!(parse(old).unwrap().cql(), old);
        assert_eq!(Replication::default().cql(), old);
    }

    #[test]
    fn map_literals_of_both_classes_parse() {
        assert_eq!(
            parse("{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc-2': '2'}").unwrap(),
            nts(None, &[("dc1", 3), ("dc-2", 2)])
        );
        assert_eq!(
            parse("{ 'class':'org.apache.cassandra.locator.NetworkTopologyStrategy','replication_factor':'3' }")
                .unwrap(),
            nts(Some(3), &[])
        );
        assert_eq!(
            parse("{'replication_factor': 2, 'class': 'SimpleStrategy'}").unwrap().to_string(),
            "SimpleStrategy:2"
        );
    }

    #[test]
    fn shorthands_parse_and_round_trip() {
        for (text, expected) in [
            ("SimpleStrategy:3", Replication::Simple { factor: 3 }),
            ("NetworkTopologyStrategy:dc1=3,dc2=3", nts(None, &[("dc1", 3), ("dc2", 3)])),
            ("NetworkTopologyStrategy: us-east.1 = 2 , eu_west=1", nts(None, &[("us-east.1", 2), ("eu_west", 1)])),
            ("NetworkTopologyStrategy:3", nts(Some(3), &[])),
            ("NetworkTopologyStrategy:3,dc9=5", nts(Some(3), &[("dc9", 5)])),
        ] {
            let parsed = parse(text).unwrap();
            assert_eq!(parsed, expected, "{text}");
            assert_eq!(parse(&parsed.to_string()).unwrap(), expected, "{text} round trip");
        }
    }

    #[test]
    fn the_rendered_cql_is_a_fixed_shape() {
        assert_eq!(
            nts(Some(2), &[("dc1", 3), ("dc2", 1)]).cql(),
            "{'class': 'NetworkTopologyStrategy', 'replication_factor': 2, 'dc1': 3, 'dc2': 1}"
        );
        assert_eq!(Replication::Simple { factor: 5 }.cql(), "{'class': 'SimpleStrategy', 'replication_factor': 5}");
    }

    #[test]
    fn injection_attempts_are_refused() {
        for attack in [
            "{'class': 'SimpleStrategy', 'replication_factor': 1}; DROP KEYSPACE x; --",
            "{'class': 'SimpleStrategy', 'replication_factor': 1} AND durable_writes = false",
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, '}; DROP KEYSPACE x; --': 1}",
            "{'class': 'NetworkTopologyStrategy', 'dc1''': 3}",
            "{'class': 'SimpleStrategy', 'replication_factor': 1 /* */}",
            "{'class': 'SimpleStrategy', 'replication_factor': '1}; DROP KEYSPACE x; --'}",
            "{'class': 'SimpleStrategy''; DROP KEYSPACE x; --', 'replication_factor': 1}",
            "NetworkTopologyStrategy:'}; DROP KEYSPACE x; --=3",
            "NetworkTopologyStrategy:dc1=3}; DROP KEYSPACE x; --",
            "SimpleStrategy:1}; DROP KEYSPACE x; --",
            "SimpleStrategy:1; DROP KEYSPACE x",
        ] {
            assert!(parse(attack).is_err(), "accepted {attack}");
        }
    }

    #[test]
    fn bad_classes_factors_and_shapes_are_refused_with_a_reason() {
        for (text, reason) in [
            ("", "is not SimpleStrategy"),
            ("LocalStrategy:1", "is not SimpleStrategy"),
            ("{'class': 'EverywhereStrategy'}", "is not SimpleStrategy"),
            ("SimpleStrategy:0", "from 1 to 64"),
            ("SimpleStrategy:65", "from 1 to 64"),
            ("SimpleStrategy:-1", "from 1 to 64"),
            ("SimpleStrategy:1.5", "from 1 to 64"),
            ("SimpleStrategy:", "from 1 to 64"),
            ("NetworkTopologyStrategy:", "at least one data center"),
            ("NetworkTopologyStrategy:dc1=0", "from 1 to 64"),
            ("NetworkTopologyStrategy:dc1=3,dc1=2", "named twice"),
            ("NetworkTopologyStrategy:=3", "data center name"),
            ("{'class': 'SimpleStrategy'}", "needs a replication factor"),
            ("{'class': 'SimpleStrategy', 'replication_factor': 1, 'dc1': 3}", "not data centers"),
            ("{'replication_factor': 1}", "no 'class'"),
            ("{'class': 'SimpleStrategy', 'class': 'SimpleStrategy', 'replication_factor': 1}", "twice"),
            ("{'class': 'SimpleStrategy', 'replication_factor': 1", "expected `,`"),
            ("{'class: 'SimpleStrategy'}", "expected `:`"),
            ("{'class': SimpleStrategy}", "quoted string or a number"),
            ("{'class': 'Simple", "not closed"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(reason), "{text}: {e}");
        }
    }
}
