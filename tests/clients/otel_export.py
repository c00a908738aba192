"""Sends one trace to an OTLP/HTTP collector with the OpenTelemetry Python SDK, a trace source
nobody on this team wrote.

Usage: python3 otel_export.py URL [gzip]
Makes `checkout` (SERVER) with a child `charge` (CLIENT, attribute payment.amount=42 and an event),
exports them with the SDK's OTLP/HTTP protobuf exporter, and prints the trace id (32 hex).
"""
import sys

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

url = sys.argv[1]
gzip = len(sys.argv) > 2 and sys.argv[2] == "gzip"
exporter = OTLPSpanExporter(
    endpoint=url, compression=Compression.Gzip if gzip else Compression.NoCompression
)
provider = TracerProvider(resource=Resource.create({"service.name": "py-shop"}))
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("mqrs-test")

with tracer.start_as_current_span("checkout", kind=SpanKind.SERVER) as root:
    with tracer.start_as_current_span("charge", kind=SpanKind.CLIENT) as child:
        child.set_attribute("payment.amount", 42)
        child.add_event("card declined", {"retry": True})
        child.set_status(Status(StatusCode.ERROR, "declined"))
    trace_id = format(root.get_span_context().trace_id, "032x")

provider.force_flush()
provider.shutdown()
print(trace_id)
