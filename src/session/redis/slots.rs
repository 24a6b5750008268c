//! Hash slots and the cluster's map of them: which master serves which slots.

use super::resp3::Frame;

/// The cluster hash slot of a key: CRC16 of its hash tag (the text in the first `{…}`, when
/// not empty) or of the whole key.
pub(super) fn hash_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % 16384
}

/// `CLUSTER NODES` lines: `<id> <ip:port@cport[,hostname]> <flags> …`; live masters only.
pub(super) fn parse_cluster_masters(text: &str) -> Vec<(String, u16)> {
    let mut masters = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(address), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
            continue;
        }
        let host_port = address.split(['@', ',']).next().unwrap_or_default();
        if let Some((host, port)) = host_port.rsplit_once(':') {
            if let Ok(port) = port.parse() {
                masters.push((host.to_owned(), port));
            }
        }
    }
    masters
}

/// One range of a cluster's slot map: its first and last slot and its master's address.
pub(super) type SlotRange = (u16, u16, (String, u16));

/// A `CLUSTER SLOTS` reply (RESP3): `[[first, last, [host, port, id, …], replicas…], …]`.
/// An empty host means the node that was asked; a range whose master has no known address
/// (`?`) is left out, so nobody serves it.
pub(super) fn parse_cluster_slots(reply: &Frame, asked: &str) -> Result<Vec<SlotRange>, String> {
    let Frame::Array(ranges) = reply else {
        return Err("CLUSTER SLOTS did not answer an array".into());
    };
    let mut parsed = Vec::with_capacity(ranges.len());
    for range in ranges {
        let malformed = || "a malformed CLUSTER SLOTS range".to_owned();
        let Frame::Array(fields) = range else {
            return Err(malformed());
        };
        let (Some(Frame::Integer(first)), Some(Frame::Integer(last)), Some(Frame::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(malformed());
        };
        let (Some(Frame::Bulk(host)), Some(Frame::Integer(port))) = (master.first(), master.get(1))
        else {
            return Err(malformed());
        };
        let host = String::from_utf8_lossy(host);
        let host = match host.as_ref() {
            "?" => continue,
            "" => asked.to_owned(),
            other => other.to_owned(),
        };
        let slot = |n: i64| u16::try_from(n).ok().filter(|s| usize::from(*s) < 16384);
        let (Some(first), Some(last), Ok(port)) = (slot(*first), slot(*last), u16::try_from(*port))
        else {
            return Err(malformed());
        };
        parsed.push((first, last, (host, port)));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of the Redis Cluster specification.
    #[test]
    fn hash_slots_follow_the_cluster_specification() {
        assert_eq!(hash_slot("123456789"), 12739); // CRC16 XMODEM check value 0x31C3
        assert_eq!(hash_slot("{user1000}.following"), hash_slot("user1000"));
        assert_eq!(hash_slot("foo{}{bar}"), hash_slot("foo{}{bar}"));
        assert_ne!(hash_slot("foo{}{bar}"), hash_slot("bar"));
        assert_eq!(hash_slot("foo{{bar}}zap"), hash_slot("{bar"));
        assert_eq!(hash_slot("foo{bar}{zap}"), hash_slot("bar"));
    }

    #[test]
    fn cluster_nodes_lists_live_masters_only() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002,node-b master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master - 0 1426238318243 3 connected 10923-16383
6ec2 127.0.0.1:30005@40005 master,fail - 1426238316232 1426238316232 5 disconnected
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
";
        assert_eq!(
            parse_cluster_masters(text),
            vec![
                ("127.0.0.1".to_owned(), 30002),
                ("127.0.0.1".to_owned(), 30003),
                ("127.0.0.1".to_owned(), 30001),
            ]
        );
    }

    #[test]
    fn cluster_slots_name_each_range_and_its_master() {
        let bulk = |s: &str| Frame::Bulk(s.as_bytes().to_vec());
        let node = |host: &str, port: i64| {
            Frame::Array(vec![
                bulk(host),
                Frame::Integer(port),
                bulk("id"),
                Frame::Other,
            ])
        };
        let reply = Frame::Array(vec![
            Frame::Array(vec![
                Frame::Integer(0),
                Frame::Integer(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7003),
            ]),
            Frame::Array(vec![
                Frame::Integer(5461),
                Frame::Integer(10922),
                node("", 7001),
            ]),
            Frame::Array(vec![
                Frame::Integer(10923),
                Frame::Integer(16383),
                node("?", 7002),
            ]),
        ]);
        assert_eq!(
            parse_cluster_slots(&reply, "10.0.0.9").expect("parsed"),
            vec![
                (0, 5460, ("10.0.0.1".to_owned(), 7000)),
                (5461, 10922, ("10.0.0.9".to_owned(), 7001)),
            ]
        );
        assert!(parse_cluster_slots(&Frame::Simple("OK".into()), "h").is_err());
    }
}
