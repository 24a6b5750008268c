//! `gatehouse_policy_*`: which Cedar policy set is live, since when, and how reloads went.

use super::*;

impl Metrics {
    /// A set went live: its digest becomes the one `gatehouse_policy_set_info` series.
    pub fn policy_set_loaded(&self, digest: &str, now: UnixMillis) {
        let info = &self.0.policy_set_info;
        info.clear();
        info.get_or_create(&[("digest", Text::Shared(Arc::from(digest)))])
            .set(1);
        self.0.policy_set_loaded_at.set(now.div_euclid(1000));
    }

    pub fn policy_reload(&self, ok: bool) {
        let result = Text::Static(if ok { "ok" } else { "failed" });
        self.0
            .policy_reloads
            .get_or_create(&[("result", result)])
            .inc();
    }
}
