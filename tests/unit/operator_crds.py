"""Minimal JSON schemas of the custom resources routerd ships, written for these tests.

The facts (field names, types, required fields, enums, patterns) were read from the CRDs
the projects themselves publish; only the levels routerd's manifests use are described,
each closed (`additionalProperties: false`) over every field name the CRD allows there, so
a misspelt or misplaced key fails as it would on `kubectl apply` with strict validation.

- KEDA, config/crd/bases/keda.sh_scaledobjects.yaml and keda.sh_triggerauthentications.yaml
  (storage version v1alpha1), kedacore/keda at 8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a;
  the rabbitmq trigger's metadata keys from pkg/scalers/rabbitmq_scaler.go (its `keda:"name=`
  tags), same commit.
- Prometheus Operator, example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml
  and monitoring.coreos.com_prometheusrules.yaml (v1), prometheus-operator/prometheus-operator
  at 6adcebc5076c34f4f55f8f5f7b1e528929373ac7.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INT32: Schema = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
BOOL: Schema = {"type": "boolean"}
STRING_MAP: Schema = {"type": "object", "additionalProperties": STRING}
# Prometheus durations as the operator's CRDs spell their pattern.
DURATION: Schema = {
    "type": "string",
    "pattern": (
        r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
        r"(([0-9]+)ms)?)$"
    ),
}
ANY: Schema = {}


def closed(fields: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    """An object with exactly these field names allowed (ANY for those routerd leaves out)."""
    return {
        "type": "object",
        "properties": fields,
        "required": list(required),
        "additionalProperties": False,
    }


def resource(api_version: str, kind: str, spec: Schema) -> Schema:
    return closed(
        {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": closed(
                {
                    "name": STRING,
                    "namespace": STRING,
                    "labels": STRING_MAP,
                    "annotations": STRING_MAP,
                },
                ("name",),
            ),
            "spec": spec,
        },
        ("apiVersion", "kind", "metadata", "spec"),
    )


# --- KEDA ----------------------------------------------------------------------------------

HPA_POLICY = closed(
    {"type": {"enum": ["Pods", "Percent"]}, "value": INT32, "periodSeconds": INT32},
    ("type", "value", "periodSeconds"),
)
HPA_RULES = closed(
    {
        "policies": {"type": "array", "items": HPA_POLICY},
        "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
        "stabilizationWindowSeconds": INT32,
        "tolerance": ANY,
    }
)
# The rabbitmq scaler's trigger metadata (values are strings, as in every trigger).
RABBITMQ_METADATA_KEYS = [
    "queueName",
    "mode",
    "queueLength",
    "value",
    "activationValue",
    "host",
    "protocol",
    "vhostName",
    "useRegex",
    "excludeUnacknowledged",
    "pageSize",
    "operation",
    "timeout",
    "unsafeSsl",
]
TRIGGER = closed(
    {
        "type": STRING,
        "name": STRING,
        "metadata": STRING_MAP,
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "useCachedMetrics": BOOL,
        "authenticationRef": closed(
            {
                "name": STRING,
                "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
            },
            ("name",),
        ),
    },
    ("type", "metadata"),
)
SCALED_OBJECT = resource(
    "keda.sh/v1alpha1",
    "ScaledObject",
    closed(
        {
            "scaleTargetRef": closed(
                {
                    "apiVersion": STRING,
                    "kind": STRING,
                    "name": STRING,
                    "envSourceContainerName": STRING,
                },
                ("name",),
            ),
            "minReplicaCount": INT32,
            "maxReplicaCount": INT32,
            "pollingInterval": INT32,
            "cooldownPeriod": INT32,
            "initialCooldownPeriod": INT32,
            "idleReplicaCount": INT32,
            "fallback": ANY,
            "advanced": closed(
                {
                    "horizontalPodAutoscalerConfig": closed(
                        {
                            "name": STRING,
                            "behavior": closed({"scaleUp": HPA_RULES, "scaleDown": HPA_RULES}),
                        }
                    ),
                    "restoreToOriginalReplicaCount": BOOL,
                    "scalingModifiers": ANY,
                }
            ),
            "triggers": {"type": "array", "items": TRIGGER, "minItems": 1},
        },
        ("scaleTargetRef", "triggers"),
    ),
)
TRIGGER_AUTHENTICATION = resource(
    "keda.sh/v1alpha1",
    "TriggerAuthentication",
    closed(
        {
            "secretTargetRef": {
                "type": "array",
                "items": closed(
                    {"parameter": STRING, "name": STRING, "key": STRING},
                    ("parameter", "name", "key"),
                ),
            },
            **dict.fromkeys(
                [
                    "awsSecretManager",
                    "azureKeyVault",
                    "boundServiceAccountToken",
                    "configMapTargetRef",
                    "env",
                    "filePath",
                    "gcpSecretManager",
                    "hashiCorpVault",
                    "oauth2",
                    "podIdentity",
                ],
                ANY,
            ),
        }
    ),
)

# --- Prometheus Operator -----------------------------------------------------------------

POD_METRICS_ENDPOINT = closed(
    {
        "port": STRING,
        "portNumber": INT32,
        "path": STRING,
        "interval": DURATION,
        "scrapeTimeout": DURATION,
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "honorLabels": BOOL,
        "honorTimestamps": BOOL,
        **dict.fromkeys(
            [
                "authorization",
                "basicAuth",
                "bearerTokenSecret",
                "enableHttp2",
                "filterRunning",
                "followRedirects",
                "metricRelabelings",
                "noProxy",
                "oauth2",
                "params",
                "proxyConnectHeader",
                "proxyFromEnvironment",
                "proxyUrl",
                "relabelings",
                "targetPort",
                "tlsConfig",
                "trackTimestampsStaleness",
            ],
            ANY,
        ),
    }
)
LABEL_SELECTOR = closed({"matchLabels": STRING_MAP, "matchExpressions": ANY})
POD_MONITOR = resource(
    "monitoring.coreos.com/v1",
    "PodMonitor",
    closed(
        {
            "selector": LABEL_SELECTOR,
            "podMetricsEndpoints": {"type": "array", "items": POD_METRICS_ENDPOINT},
            "namespaceSelector": ANY,
            "jobLabel": STRING,
            **dict.fromkeys(
                [
                    "attachMetadata",
                    "bodySizeLimit",
                    "convertClassicHistogramsToNHCB",
                    "fallbackScrapeProtocol",
                    "keepDroppedTargets",
                    "labelLimit",
                    "labelNameLengthLimit",
                    "labelValueLengthLimit",
                    "nativeHistogramBucketLimit",
                    "nativeHistogramMinBucketFactor",
                    "podTargetLabels",
                    "sampleLimit",
                    "scrapeClass",
                    "scrapeClassicHistograms",
                    "scrapeNativeHistograms",
                    "scrapeProtocols",
                    "selectorMechanism",
                    "targetLimit",
                ],
                ANY,
            ),
        },
        ("selector",),
    ),
)
RULE = closed(
    {
        "alert": STRING,
        "record": STRING,
        # int-or-string in the CRD; a PromQL expression here.
        "expr": STRING,
        "for": DURATION,
        "keep_firing_for": DURATION,
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    ("expr",),
)
PROMETHEUS_RULE = resource(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    closed(
        {
            "groups": {
                "type": "array",
                "items": closed(
                    {
                        "name": {"type": "string", "minLength": 1},
                        "rules": {"type": "array", "items": RULE},
                        "interval": DURATION,
                        "labels": STRING_MAP,
                        "limit": INT32,
                        "partial_response_strategy": STRING,
                        "query_offset": DURATION,
                    },
                    ("name",),
                ),
            }
        }
    ),
)

SCHEMAS: dict[tuple[str, str], Schema] = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
    ("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
}
