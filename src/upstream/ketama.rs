//! Consistent hashing on a Ketama ring, built the way nginx builds it for
//! `hash $key consistent`: for each target, 160 points per unit of weight,
//! each the CRC32 of `host`, a NUL, `port` and the previous point's four
//! bytes (little-endian); a key goes to the first point at or after the
//! CRC32 of the key, wrapping around. So a service whose targets are
//! written as nginx's `server host:port` lines sends each key where nginx
//! would, and adding or removing a target moves only that target's share
//! of the keys.

/// Points per unit of weight, as nginx.
const POINTS_PER_WEIGHT: u32 = 160;

/// A ring of points, each a hash and the index of its target.
#[derive(Debug, Default)]
pub struct Ring {
    points: Vec<(u32, u16)>,
}

impl Ring {
    /// The ring of targets given as `(host:port, weight)`.
    pub fn new<'a>(targets: impl IntoIterator<Item = (&'a str, u32)>) -> Ring {
        let mut points = Vec::new();
        for (index, (server, weight)) in targets.into_iter().enumerate() {
            let (host, port) = match server.rfind(':') {
                Some(colon) => (&server[..colon], &server[colon + 1..]),
                None => (server, ""),
            };
            let mut base = crc32fast::Hasher::new();
            base.update(host.as_bytes());
            base.update(b"\0");
            base.update(port.as_bytes());
            let mut previous = 0u32;
            for _ in 0..weight * POINTS_PER_WEIGHT {
                let mut hasher = base.clone();
                hasher.update(&previous.to_le_bytes());
                let hash = hasher.finalize();
                points.push((hash, index as u16));
                previous = hash;
            }
        }
        // nginx sorts by hash alone and keeps the first of equal hashes.
        points.sort_by_key(|&(hash, _)| hash);
        points.dedup_by_key(|&mut (hash, _)| hash);
        Ring { points }
    }

    /// The hash a key is placed by.
    pub fn hash(key: &[u8]) -> u32 {
        crc32fast::hash(key)
    }

    /// Targets in ring order from where `hash` falls: the first is the
    /// key's own, the next ones where it goes when that one cannot take it.
    pub fn walk(&self, hash: u32) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|&(point, _)| point < hash);
        let len = self.points.len();
        (0..len).map(move |k| usize::from(self.points[(start + k) % len].1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(ring: &Ring, key: &str) -> usize {
        ring.walk(Ring::hash(key.as_bytes())).next().unwrap()
    }

    #[test]
    fn adding_a_target_moves_only_its_share_of_keys() {
        let four: Vec<String> = (1..=4).map(|i| format!("10.0.0.{i}:8080")).collect();
        let five: Vec<String> = (1..=5).map(|i| format!("10.0.0.{i}:8080")).collect();
        let before = Ring::new(four.iter().map(|s| (s.as_str(), 1)));
        let after = Ring::new(five.iter().map(|s| (s.as_str(), 1)));
        let keys: Vec<String> = (0..20_000).map(|i| format!("client-{i}")).collect();
        let mut moved = 0;
        for key in &keys {
            let (old, new) = (owner(&before, key), owner(&after, key));
            if old != new {
                assert_eq!(new, 4, "a key moved to an old target");
                moved += 1;
            }
        }
        let share = f64::from(moved) / keys.len() as f64;
        assert!(share > 0.10 && share < 0.20 + 0.05, "moved {share}");
    }

    #[test]
    fn weights_give_a_proportional_share() {
        let ring = Ring::new([("a:1", 1), ("b:1", 3)]);
        let to_b = (0..20_000)
            .filter(|i| owner(&ring, &format!("k{i}")) == 1)
            .count();
        let share = to_b as f64 / 20_000.0;
        assert!((0.70..0.80).contains(&share), "{share}");
    }

    #[test]
    fn a_walk_visits_every_target_from_the_keys_point() {
        let ring = Ring::new([("a:1", 1), ("b:1", 1), ("c:1", 1)]);
        let mut seen: Vec<usize> = ring.walk(12345).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, [0, 1, 2]);
    }
}
