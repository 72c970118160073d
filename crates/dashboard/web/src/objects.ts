// The cluster objects as the API serializes them (camelCase, Kubernetes
// shapes), only the fields the pages show; and small derived facts the
// pages share (a pod's owner, a deployment's rollout state).

import type { ApiObject } from "./live";

/** Object metadata. */
export interface Meta {
  name: string;
  project?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  resourceVersion?: string;
  creationTimestamp?: string | number;
  deletionTimestamp?: string | number;
  generation?: number;
  ownerReferences?: Array<{ kind: string; name: string }>;
}

/** CPU, memory and pod counts. */
export interface Resources {
  cpuMillis: number;
  memoryBytes: number;
  pods: number;
}

/** A node and its live status. */
export interface Node extends ApiObject {
  metadata: Meta;
  spec: { address?: string; taints?: Array<{ key: string; value?: string; effect: string }>; unschedulable?: boolean; costPerHour?: number };
  status: {
    capacity: Resources;
    allocated: Resources;
    ready: boolean;
    lastHeartbeat: number;
    cpuLoad?: number;
    loadAverage?: number;
    memoryAvailableBytes?: number;
    info?: Record<string, string>;
    endpoint?: string;
    notReadyReason?: string;
  };
}

/** CPU and memory quantities as written (`500m`, `2`, `128Mi`). */
export interface ResourceList {
  cpu?: string;
  memory?: string;
}

/** A container of a pod spec. */
export interface Container {
  name: string;
  image: string;
  resources?: { requests?: ResourceList; limits?: ResourceList };
}

/** A container's state: one of the three keys. */
export interface ContainerState {
  waiting?: { reason: string };
  running?: { startedAt: number };
  terminated?: { exitCode: number; reason: string };
}

/** A pod. */
export interface Pod extends ApiObject {
  metadata: Meta;
  spec: { containers: Container[]; nodeName?: string };
  status: {
    phase: string;
    reason?: string;
    message?: string;
    podIP?: string;
    hostIP?: string;
    startTime?: number;
    containerStatuses?: Array<{ name: string; image: string; ready: boolean; restartCount: number; state: ContainerState }>;
    conditions?: Array<{ type: string; status: string; reason?: string; message?: string }>;
  };
}

/** A deployment. */
export interface Deployment extends ApiObject {
  metadata: Meta;
  spec: {
    replicas?: number;
    selector?: { matchLabels?: Record<string, string> };
    template: { metadata?: { labels?: Record<string, string> }; spec: { containers: Container[] } };
    paused?: boolean;
  };
  status?: {
    observedGeneration?: number;
    replicas?: number;
    updatedReplicas?: number;
    readyReplicas?: number;
    availableReplicas?: number;
    unavailableReplicas?: number;
    conditions?: Array<{ type: string; status: string; reason?: string; message?: string; lastUpdateTime?: string | number }>;
  };
}

/** An event about an object. */
export interface ClusterEvent {
  metadata: Meta;
  involvedObject: { kind: string; name: string; project?: string };
  reason: string;
  message: string;
  type: string;
  source: string;
  count: number;
  firstTimestamp: number;
  lastTimestamp: number;
}

/** The pod's status as `kubectl get pods` words it: a terminating or waiting reason, else the phase. */
export function podStatus(pod: Pod): string {
  if (pod.metadata.deletionTimestamp) return "Terminating";
  for (const container of pod.status?.containerStatuses ?? []) {
    if (container.state?.waiting && pod.status.phase !== "Running") return container.state.waiting.reason;
    if (container.state?.terminated && pod.status.phase !== "Succeeded") return container.state.terminated.reason || "Error";
  }
  return pod.status?.reason ?? pod.status?.phase ?? "Pending";
}

/** Restarts summed over the pod's containers. */
export function restarts(pod: Pod): number {
  return (pod.status?.containerStatuses ?? []).reduce((sum, c) => sum + (c.restartCount ?? 0), 0);
}

/** `ready/total` containers. */
export function readyText(pod: Pod): string {
  const statuses = pod.status?.containerStatuses ?? [];
  return `${statuses.filter((c) => c.ready).length}/${pod.spec.containers.length}`;
}

/** The deployment a pod belongs to: its owner reference of kind Deployment. */
export function podDeployment(pod: Pod): string | null {
  return pod.metadata.ownerReferences?.find((o) => o.kind === "Deployment")?.name ?? null;
}

/** The rollout state of a deployment, as `kubectl rollout status` would say it. */
export function rolloutState(deployment: Deployment): { state: string; detail: string } {
  const want = deployment.spec.replicas ?? 1;
  const status = deployment.status ?? {};
  const updated = status.updatedReplicas ?? 0;
  const available = status.availableReplicas ?? 0;
  const total = status.replicas ?? 0;
  const failed = status.conditions?.find((c) => c.type === "Progressing" && c.status === "False");
  if (deployment.spec.paused) return { state: "paused", detail: "rollout paused" };
  if (failed) return { state: "failed", detail: failed.message ?? failed.reason ?? "progress deadline exceeded" };
  if ((status.observedGeneration ?? 0) < (deployment.metadata.generation ?? 0)) return { state: "progressing", detail: "waiting for the controller to see the change" };
  if (updated < want) return { state: "progressing", detail: `${updated} of ${want} updated` };
  if (total > updated) return { state: "progressing", detail: `${total - updated} old replicas terminating` };
  if (available < updated) return { state: "progressing", detail: `${available} of ${updated} updated replicas available` };
  return { state: "complete", detail: `${available} of ${want} available` };
}

const MEMORY_SCALE: Record<string, number> = { "": 1, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50 };

/** Millicores of a CPU quantity (`500m`, `2`); 0 for what cannot be read (the server validated it). */
export function cpuMillis(text: string | undefined): number {
  const match = /^([0-9.]+)(m?)$/.exec((text ?? "").trim());
  if (!match) return 0;
  return Math.round(Number(match[1]) * (match[2] ? 1 : 1000));
}

/** Bytes of a memory quantity (`128Mi`, `1G`, `1048576`); 0 for what cannot be read. */
export function memoryBytes(text: string | undefined): number {
  const match = /^([0-9.]+)([a-zA-Z]*)$/.exec((text ?? "").trim());
  if (!match || !(match[2] in MEMORY_SCALE)) return 0;
  return Math.round(Number(match[1]) * MEMORY_SCALE[match[2]]);
}

/**
 * What a pod takes from its node, as the scheduler counts it: per
 * container its request, or its limit where it requests nothing; one pod.
 */
export function podRequests(pod: Pod): Resources {
  const total: Resources = { cpuMillis: 0, memoryBytes: 0, pods: 1 };
  for (const container of pod.spec.containers) {
    const requests = container.resources?.requests ?? {};
    const limits = container.resources?.limits ?? {};
    total.cpuMillis += cpuMillis(requests.cpu ?? limits.cpu);
    total.memoryBytes += memoryBytes(requests.memory ?? limits.memory);
  }
  return total;
}

/** The requests of `pods` summed (the allocation of the node they are on). */
export function sumRequests(pods: Pod[]): Resources {
  const total: Resources = { cpuMillis: 0, memoryBytes: 0, pods: 0 };
  for (const pod of pods) {
    const r = podRequests(pod);
    total.cpuMillis += r.cpuMillis;
    total.memoryBytes += r.memoryBytes;
    total.pods += r.pods;
  }
  return total;
}
