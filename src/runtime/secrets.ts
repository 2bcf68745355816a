import * as k8s from "@kubernetes/client-node";

/** One key of a Secret, decoded; undefined when the Secret or the key does not exist. */
export function secretReader(kc: k8s.KubeConfig) {
  const core = kc.makeApiClient(k8s.CoreV1Api);
  return async (namespace: string, name: string, key: string): Promise<string | undefined> => {
    const secret = await core.readNamespacedSecret({ namespace, name }).catch((err: { code?: number }) => {
      if (err.code === 404) return undefined;
      throw err;
    });
    const data = secret?.data?.[key];
    return data === undefined ? undefined : Buffer.from(data, "base64").toString("utf8");
  };
}
