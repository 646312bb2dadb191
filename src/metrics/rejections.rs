//! `peregrine_rejections_total{reason}`: the refusals [`crate::rejections`] counts.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::rejections::totals;

/// `peregrine_rejections_total{reason}`.
#[derive(Debug)]
pub struct RejectionCollector;

impl Collector for RejectionCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        super::collector::counters(
            &mut enc,
            "peregrine_rejections",
            "Connections and requests refused or closed by a limit or a check, by reason.",
            totals().map(|(r, n)| ([("reason", r.label())], n)),
        )
    }
}
