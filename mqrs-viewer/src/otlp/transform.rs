//! OTLP/JSON traces turned into traces without storing them: what the Jaeger UI's file upload
//! asks of `POST /api/transform`.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::convert::to_stored;
use super::prescan::{decode_budget, json_over};
use crate::store::StoredTrace;

/// Most traces one transform answers with.
const MAX_TRACES: usize = 10_000;

/// The traces an OTLP/JSON `ExportTraceServiceRequest` of at most `max_body` bytes holds, in
/// the order their first spans come; the error says why the body is not one.
pub fn otlp_json_traces(body: &[u8], max_body: usize) -> Result<Vec<StoredTrace>, String> {
    if json_over(body, decode_budget(max_body)) {
        return Err("the file holds more spans, events and attributes than one upload may".into());
    }
    let request = serde_json::from_slice::<ExportTraceServiceRequest>(body)
        .map_err(|e| format!("cannot unmarshal OTLP: {e}"))?;
    let (spans, _) = to_stored(request, u64::MAX, MAX_TRACES);
    let mut order = Vec::new();
    let mut by_trace: HashMap<u128, Vec<_>> = HashMap::new();
    for s in spans {
        by_trace
            .entry(s.trace_id)
            .or_insert_with(|| {
                order.push(s.trace_id);
                Vec::new()
            })
            .push(s);
    }
    Ok(order
        .into_iter()
        .filter_map(|id| by_trace.remove(&id))
        .map(StoredTrace::of_spans)
        .collect())
}
