import { kinds } from "../../src/api/kinds.js";
import { existsSync } from "node:fs";
import * as k8s from "@kubernetes/client-node";
import { kubeconfigPath, kubectlPath } from "../env/lab.js";
import { run, waitFor } from "../env/proc.js";

/**
 * Clients on the lab's apiserver, as the admin. Test files import this after the global setup made
 * the kubeconfig; the lab CLI and the benchmark import it before the lab exists and only use kubectl.
 */
export const kubeConfig = new k8s.KubeConfig();
if (existsSync(kubeconfigPath)) kubeConfig.loadFromFile(kubeconfigPath);

/** kubectl from the same release as the apiserver, on the lab kubeconfig; stdin optional. */
export const kubectl = async (args: string[], input?: string): Promise<string> =>
  (await run(kubectlPath(), ["--kubeconfig", kubeconfigPath, ...args], input === undefined ? {} : { input })).stdout;

/** Installs (server-side apply, idempotent) the generated CRDs and waits until all are Established. */
export async function installCrds(): Promise<void> {
  await kubectl(["apply", "--server-side", "--force-conflicts", "-k", "crds/"]);
  const crds = [kinds.bridge, kinds.volume, kinds.virtualMachine].map((k) => `crd/${k.plural}.${k.group}`);
  await kubectl(["wait", "--for=condition=Established", "--timeout=30s", ...crds]);
  // Established is not yet "served with its watch cache": wait until a list answers.
  await waitFor(
    "kaktus resources served",
    async () => (await kubectl(["get", "kaktus", "-A"])) !== undefined || undefined,
    {
      timeoutMs: 20_000,
    },
  );
}

/**
 * Deletes a namespace a test made and waits until it is gone. Delete it while the agents or
 * controllers that hold its objects' finalizers still run: a namespace still terminating when the
 * lab stops keeps those objects for ever.
 */
export const deleteNamespace = (ns: string, timeoutSeconds = 180) =>
  kubectl(["delete", "namespace", ns, "--ignore-not-found", `--timeout=${timeoutSeconds}s`]);
