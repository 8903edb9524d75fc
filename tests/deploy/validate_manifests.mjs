// Offline typed validation of rendered Kubernetes manifests (the output of `kubectl kustomize`).
//
//   node validate_manifests.mjs RENDERED.yaml [...]      exit 0 valid, 1 invalid, 2 usage/setup
//
// 1. Schema: every object is checked against the Kubernetes 1.29 OpenAPI schema compiled into the
//    npm package kubernetes-models (and @kubernetes-models/prometheus-operator for ServiceMonitor,
//    PodMonitor, PrometheusRule) — types, enums, required fields. The schemas accept unknown
//    fields, as the API server's non-strict mode does, so this script also runs each validator on
//    a proxy that records which fields it looked at: a field the schema never reads is unknown
//    (a typo such as `serviceNme`), as with `kubectl apply --validate=strict`.
// 2. Consistency across objects, what a schema cannot see: references (ConfigMaps, PVCs, service
//    accounts, Services) resolve; selectors select; named ports exist; probes hit a container
//    port; the worker StatefulSet's replicas equal the layer map's entries; the pods meet the
//    "restricted" Pod Security Standard; GPU workers ask for nvidia.com/gpu.
//
// Why this tool: kubeconform/kubeval are not Debian packages and download schemas at run time;
// kubectl's own validation needs an API server. kubernetes-models ships the schemas inside the
// npm package, so `npm ci` (package-lock.json beside this file) is the only network access.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const SCHEMAS = {
  "v1/ConfigMap": "kubernetes-models/_schemas/IoK8sApiCoreV1ConfigMap.mjs",
  "v1/Namespace": "kubernetes-models/_schemas/IoK8sApiCoreV1Namespace.mjs",
  "v1/PersistentVolumeClaim": "kubernetes-models/_schemas/IoK8sApiCoreV1PersistentVolumeClaim.mjs",
  "v1/Service": "kubernetes-models/_schemas/IoK8sApiCoreV1Service.mjs",
  "v1/ServiceAccount": "kubernetes-models/_schemas/IoK8sApiCoreV1ServiceAccount.mjs",
  "apps/v1/Deployment": "kubernetes-models/_schemas/IoK8sApiAppsV1Deployment.mjs",
  "apps/v1/StatefulSet": "kubernetes-models/_schemas/IoK8sApiAppsV1StatefulSet.mjs",
  "policy/v1/PodDisruptionBudget": "kubernetes-models/_schemas/IoK8sApiPolicyV1PodDisruptionBudget.mjs",
  "networking.k8s.io/v1/NetworkPolicy":
    "kubernetes-models/_schemas/IoK8sApiNetworkingV1NetworkPolicy.mjs",
  "monitoring.coreos.com/v1/ServiceMonitor":
    "@kubernetes-models/prometheus-operator/_schemas/MonitoringCoreosComV1ServiceMonitor.mjs",
  "monitoring.coreos.com/v1/PodMonitor":
    "@kubernetes-models/prometheus-operator/_schemas/MonitoringCoreosComV1PodMonitor.mjs",
  "monitoring.coreos.com/v1/PrometheusRule":
    "@kubernetes-models/prometheus-operator/_schemas/MonitoringCoreosComV1PrometheusRule.mjs",
};

const errors = [];
function fail(where, message) {
  errors.push(`${where}: ${message}`);
}

// Imports a package-internal schema module by file (the packages do not export _schemas).
async function loadValidator(spec) {
  const url = new URL(`./node_modules/${spec}`, import.meta.url);
  const mod = await import(url.href);
  return mod.validate;
}

// ---------------------------------------------------------------------------------------------
// Schema validation with unknown-field detection.

// Wraps `root` so that every property read is recorded per object: seen.get(obj) = Set(keys).
function tracking(root, seen) {
  const proxies = new WeakMap();
  const wrap = (value) => {
    if (value === null || typeof value !== "object") return value;
    if (proxies.has(value)) return proxies.get(value);
    if (!seen.has(value)) seen.set(value, new Set());
    const keys = seen.get(value);
    const proxy = new Proxy(value, {
      get(target, prop, receiver) {
        if (typeof prop === "string") keys.add(prop);
        return wrap(Reflect.get(target, prop, receiver));
      },
      has(target, prop) {
        if (typeof prop === "string") keys.add(prop);
        return Reflect.has(target, prop);
      },
    });
    proxies.set(value, proxy);
    return proxy;
  };
  return wrap(root);
}

// Fields of `obj` (recursively) that the validator never read.
function unknownFields(obj, seen, path, out) {
  if (obj === null || typeof obj !== "object") return;
  const keys = seen.get(obj) || new Set();
  if (Array.isArray(obj)) {
    obj.forEach((v, i) => unknownFields(v, seen, `${path}[${i}]`, out));
    return;
  }
  for (const k of Object.keys(obj)) {
    if (!keys.has(k)) {
      out.push(`${path}.${k}`);
      continue;
    }
    unknownFields(obj[k], seen, `${path}.${k}`, out);
  }
}

async function validateSchema(obj, where) {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const spec = SCHEMAS[key];
  if (!spec) {
    fail(where, `no schema for ${key}; add it to SCHEMAS in validate_manifests.mjs`);
    return;
  }
  const validate = await loadValidator(spec);
  const seen = new Map();
  const ok = validate(tracking(obj, seen));
  if (!ok) {
    for (const e of validate.errors || []) {
      const detail = e.message || `${e.keyword} ${JSON.stringify(e.params)}`;
      fail(where, `schema: ${e.instancePath || "/"}: ${detail}`);
    }
    return;
  }
  const unknown = [];
  unknownFields(obj, seen, "", unknown);
  for (const u of unknown) fail(where, `unknown field ${u.slice(1)} (not in the ${key} schema)`);
}

// ---------------------------------------------------------------------------------------------
// Cross-object checks.

const matches = (selector, labels) =>
  selector && Object.keys(selector).length > 0 &&
  Object.entries(selector).every(([k, v]) => labels && labels[k] === v);

function podTemplates(objects) {
  return objects
    .filter((o) => o.kind === "Deployment" || o.kind === "StatefulSet")
    .map((o) => ({ owner: o, where: `${o.kind}/${o.metadata.name}`, template: o.spec.template }));
}

function checkWorkloads(objects) {
  const byKind = (kind) => objects.filter((o) => o.kind === kind);
  const names = (kind) => new Set(byKind(kind).map((o) => o.metadata.name));
  const configMaps = names("ConfigMap");
  const pvcs = names("PersistentVolumeClaim");
  const serviceAccounts = names("ServiceAccount");

  for (const { owner, where, template } of podTemplates(objects)) {
    const spec = template.spec;
    if (!matches(owner.spec.selector.matchLabels, template.metadata.labels)) {
      fail(where, "spec.selector does not select its own pod template");
    }
    if (spec.serviceAccountName && !serviceAccounts.has(spec.serviceAccountName)) {
      fail(where, `service account '${spec.serviceAccountName}' is not in the rendering`);
    }
    for (const v of spec.volumes || []) {
      if (v.configMap && !configMaps.has(v.configMap.name)) {
        fail(where, `volume '${v.name}': ConfigMap '${v.configMap.name}' is not in the rendering`);
      }
      if (v.persistentVolumeClaim && !pvcs.has(v.persistentVolumeClaim.claimName)) {
        fail(where, `volume '${v.name}': PVC '${v.persistentVolumeClaim.claimName}' is missing`);
      }
    }
    // Pod Security Standard "restricted".
    const psc = spec.securityContext || {};
    if (psc.runAsNonRoot !== true) fail(where, "pod securityContext.runAsNonRoot must be true");
    if (!psc.seccompProfile || psc.seccompProfile.type !== "RuntimeDefault") {
      fail(where, "pod securityContext.seccompProfile.type must be RuntimeDefault");
    }
    const volumeNames = new Set((spec.volumes || []).map((v) => v.name));
    for (const c of spec.containers) {
      const cw = `${where} container '${c.name}'`;
      const sc = c.securityContext || {};
      if (sc.allowPrivilegeEscalation !== false) fail(cw, "allowPrivilegeEscalation must be false");
      const drop = (sc.capabilities && sc.capabilities.drop) || [];
      if (!drop.includes("ALL")) fail(cw, "capabilities.drop must include ALL");
      if (!c.resources || !c.resources.requests || !c.resources.requests.cpu ||
          !c.resources.requests.memory) {
        fail(cw, "needs cpu and memory requests");
      }
      for (const e of c.envFrom || []) {
        if (e.configMapRef && !configMaps.has(e.configMapRef.name)) {
          fail(cw, `envFrom ConfigMap '${e.configMapRef.name}' is not in the rendering`);
        }
      }
      for (const m of c.volumeMounts || []) {
        if (!volumeNames.has(m.name)) fail(cw, `volumeMount '${m.name}' has no volume`);
      }
      const portNumbers = new Set((c.ports || []).map((p) => p.containerPort));
      const portNames = new Set((c.ports || []).map((p) => p.name));
      for (const probeName of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        const probe = c[probeName];
        if (!probe) continue;
        const port = probe.grpc ? probe.grpc.port
          : probe.httpGet ? probe.httpGet.port
          : probe.tcpSocket ? probe.tcpSocket.port : undefined;
        const known = typeof port === "number" ? portNumbers.has(port) : portNames.has(port);
        if (!known) fail(cw, `${probeName} port ${port} is not a container port`);
      }
      const ann = template.metadata.annotations || {};
      if (ann["prometheus.io/scrape"] === "true" &&
          !portNumbers.has(Number(ann["prometheus.io/port"]))) {
        fail(cw, `prometheus.io/port ${ann["prometheus.io/port"]} is not a container port`);
      }
      // GPU workers: a CUDA device needs a GPU from the device plugin, and the reverse.
      const args = (c.args || []).join(" ");
      const wantsCuda = /--device\s+cuda/.test(args);
      const gpus = c.resources && c.resources.limits && c.resources.limits["nvidia.com/gpu"];
      if (wantsCuda && !gpus) fail(cw, "--device cuda:N without an nvidia.com/gpu limit");
      if (!wantsCuda && gpus) fail(cw, "an nvidia.com/gpu limit but no --device cuda:N");
      // swarm-worker refuses to start on cuda without an explicit KV budget (docs/cli.md).
      if (wantsCuda && !/--kv-budget\s+[0-9]/.test(args)) {
        fail(cw, "--device cuda:N without --kv-budget BYTES (the worker would exit 2)");
      }
    }
  }
}

function checkServices(objects) {
  const templates = podTemplates(objects);
  for (const svc of objects.filter((o) => o.kind === "Service")) {
    const where = `Service/${svc.metadata.name}`;
    const selected = templates.filter((t) => matches(svc.spec.selector, t.template.metadata.labels));
    if (selected.length === 0) {
      fail(where, "selects no pod template");
      continue;
    }
    for (const p of svc.spec.ports) {
      if (typeof p.targetPort !== "string") continue;
      for (const t of selected) {
        const names = t.template.spec.containers.flatMap((c) => (c.ports || []).map((q) => q.name));
        if (!names.includes(p.targetPort)) {
          fail(where, `targetPort '${p.targetPort}' is not a named port of ${t.where}`);
        }
      }
    }
  }
  for (const sts of objects.filter((o) => o.kind === "StatefulSet")) {
    const where = `StatefulSet/${sts.metadata.name}`;
    const svc = objects.find((o) => o.kind === "Service" && o.metadata.name === sts.spec.serviceName);
    if (!svc) fail(where, `serviceName '${sts.spec.serviceName}' is not a Service in the rendering`);
    else if (svc.spec.clusterIP !== "None") fail(where, `Service '${svc.metadata.name}' is not headless`);
  }
}

function checkPolicies(objects) {
  const templates = podTemplates(objects);
  const byLabels = (sel) => templates.filter((t) => matches(sel, t.template.metadata.labels));
  for (const pdb of objects.filter((o) => o.kind === "PodDisruptionBudget")) {
    if (byLabels(pdb.spec.selector.matchLabels).length === 0) {
      fail(`PodDisruptionBudget/${pdb.metadata.name}`, "selects no pods");
    }
  }
  for (const np of objects.filter((o) => o.kind === "NetworkPolicy")) {
    const where = `NetworkPolicy/${np.metadata.name}`;
    const targets = byLabels(np.spec.podSelector.matchLabels);
    if (targets.length === 0) fail(where, "selects no pods");
    for (const rule of np.spec.ingress || []) {
      for (const port of rule.ports || []) {
        if (typeof port.port !== "string") continue;
        for (const t of targets) {
          const names = t.template.spec.containers.flatMap((c) => (c.ports || []).map((q) => q.name));
          if (!names.includes(port.port)) fail(where, `port '${port.port}' is not named in ${t.where}`);
        }
      }
    }
  }
  for (const m of objects.filter((o) => o.kind === "ServiceMonitor")) {
    const where = `ServiceMonitor/${m.metadata.name}`;
    const svcs = objects.filter((o) => o.kind === "Service" &&
                                      matches(m.spec.selector.matchLabels, o.metadata.labels));
    if (svcs.length === 0) fail(where, "selects no Service");
    for (const ep of m.spec.endpoints) {
      for (const s of svcs) {
        if (!s.spec.ports.some((p) => p.name === ep.port)) {
          fail(where, `port '${ep.port}' is not a port of Service/${s.metadata.name}`);
        }
      }
    }
  }
  for (const m of objects.filter((o) => o.kind === "PodMonitor")) {
    const where = `PodMonitor/${m.metadata.name}`;
    const pods = byLabels(m.spec.selector.matchLabels);
    if (pods.length === 0) fail(where, "selects no pods");
    for (const ep of m.spec.podMetricsEndpoints) {
      for (const t of pods) {
        const names = t.template.spec.containers.flatMap((c) => (c.ports || []).map((q) => q.name));
        if (!names.includes(ep.port)) fail(where, `port '${ep.port}' is not named in ${t.where}`);
      }
    }
  }
}

// The worker StatefulSet must run exactly one pod per layer-map entry (the coordinator dials one
// worker per entry; worker-entrypoint.sh refuses an ordinal without one).
function checkLayerMap(objects) {
  for (const sts of objects.filter((o) => o.kind === "StatefulSet")) {
    const where = `StatefulSet/${sts.metadata.name}`;
    const spec = sts.spec.template.spec;
    const vol = (spec.volumes || []).find((v) => v.configMap);
    const cm = vol && objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === vol.configMap.name);
    if (!cm || !cm.data || cm.data["layer-map.txt"] === undefined) {
      fail(where, "mounts no ConfigMap with a layer-map.txt");
      continue;
    }
    const entries = cm.data["layer-map.txt"]
      .split("\n")
      .map((l) => l.replace(/#.*/, "").trim())
      .filter((l) => l.length > 0);
    for (const e of entries) {
      if (!/^(\d+-\d+|blocks\s+\d+(\s*,\s*\d+)*)$/.test(e)) {
        fail(`ConfigMap/${cm.metadata.name}`, `layer-map entry '${e}' is neither 'A-B' nor 'blocks i,j'`);
      }
      const m = /^(\d+)-(\d+)$/.exec(e);
      if (m && Number(m[1]) > Number(m[2])) fail(`ConfigMap/${cm.metadata.name}`, `empty range '${e}'`);
    }
    const replicas = sts.spec.replicas === undefined ? 1 : sts.spec.replicas;
    if (replicas !== entries.length) {
      fail(where, `replicas ${replicas} but the layer map has ${entries.length} entries`);
    }
  }
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: node validate_manifests.mjs RENDERED.yaml [...]");
    process.exit(2);
  }
  for (const file of files) {
    const objects = [];
    for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
      if (doc.errors.length > 0) {
        fail(file, `YAML: ${doc.errors[0].message}`);
        continue;
      }
      const obj = doc.toJS();
      if (obj === null) continue;
      objects.push(obj);
    }
    const before = errors.length;
    for (const obj of objects) {
      const where = `${file}: ${obj.kind}/${obj.metadata && obj.metadata.name}`;
      await validateSchema(obj, where);
    }
    if (errors.length === before) {
      const start = errors.length;
      checkWorkloads(objects);
      checkServices(objects);
      checkPolicies(objects);
      checkLayerMap(objects);
      for (let i = start; i < errors.length; i++) errors[i] = `${file}: ${errors[i]}`;
    }
    console.log(`${file}: ${objects.length} objects, ${errors.length - before} problems`);
  }
  for (const e of errors) console.error(`ERROR ${e}`);
  process.exit(errors.length === 0 ? 0 : 1);
}

main().catch((e) => {
  console.error(`validate_manifests: ${e.stack || e}`);
  process.exit(2);
});
