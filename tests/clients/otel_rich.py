"""Sends one trace with what OTLP carries beyond names and times, with the OpenTelemetry Python
SDK (nobody on this team wrote it): resource attributes, an instrumentation scope with a
version, an OK status, a link, an array attribute, and a span of unspecified kind is not
possible from the SDK (it always sets one), so kinds are the SDK's own.

Usage: python3 otel_rich.py URL
Makes `order` (SERVER, status OK) with a child `pack` (INTERNAL, attribute items=["a","b"]) and
a second root `audit` (CONSUMER) linked to `pack` with a link attribute; prints the two trace
ids (32 hex each), space-separated.
"""
import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

url = sys.argv[1]
provider = TracerProvider(
    resource=Resource.create({"service.name": "py-rich", "deployment.environment": "test"})
)
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url)))
tracer = provider.get_tracer("rich-lib", "2.1.0")

with tracer.start_as_current_span("order", kind=SpanKind.SERVER) as root:
    with tracer.start_as_current_span("pack", kind=SpanKind.INTERNAL) as pack:
        pack.set_attribute("items", ["a", "b"])
        pack_ctx = pack.get_span_context()
    root.set_status(Status(StatusCode.OK))
    first = format(root.get_span_context().trace_id, "032x")

with tracer.start_as_current_span(
    "audit",
    kind=SpanKind.CONSUMER,
    context=trace.set_span_in_context(trace.INVALID_SPAN),
    links=[Link(pack_ctx, {"reason": "batch"})],
) as audit:
    second = format(audit.get_span_context().trace_id, "032x")

provider.force_flush()
provider.shutdown()
print(first, second)
