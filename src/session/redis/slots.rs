//! Hash slots and the cluster's map of them: which master serves which slots.

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
}
