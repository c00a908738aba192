"""Sends RPC metrics to an OTLP/HTTP collector with the OpenTelemetry Python SDK, a metrics
source nobody on this team wrote.

Usage: python3 otel_metrics.py URL
Records `rpc.server.call.duration` (seconds, exponential histogram) of service `py-shop` for
`rpc.method=Shop/checkout`: 10 calls, exported, then 5 more (3 of all 15 failed), exported
again, with the SDK's default cumulative temporality; and `rpc.client.call.duration` with the
SDK's default explicit buckets. Prints {"p50": seconds} of the 15 recorded durations.
"""
import json
import math
import sys

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

url = sys.argv[1]
reader = PeriodicExportingMetricReader(
    OTLPMetricExporter(endpoint=url), export_interval_millis=3_600_000
)
provider = MeterProvider(
    resource=Resource.create({"service.name": "py-shop"}),
    metric_readers=[reader],
    views=[
        View(
            instrument_name="rpc.server.call.duration",
            aggregation=ExponentialBucketHistogramAggregation(),
        )
    ],
)
meter = provider.get_meter("mqrs-test")
server = meter.create_histogram("rpc.server.call.duration", unit="s")
client = meter.create_histogram("rpc.client.call.duration", unit="s")

durations = [0.003 * (1.37**i) for i in range(15)]
for i, d in enumerate(durations):
    attrs = {"rpc.system.name": "grpc", "rpc.method": "Shop/checkout"}
    if i % 5 == 1:
        attrs["error.type"] = "UNAVAILABLE"
    server.record(d, attrs)
    client.record(d, {"rpc.system.name": "grpc", "rpc.method": "Stock/reserve"})
    if i == 9:
        if not provider.force_flush(10_000):
            sys.exit("the first export failed")
if not provider.force_flush(10_000):
    sys.exit("the second export failed")
provider.shutdown()

ordered = sorted(durations)
rank = math.ceil(0.5 * len(ordered))
print(json.dumps({"p50": ordered[rank - 1]}))
