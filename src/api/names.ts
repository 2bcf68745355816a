/**
 * The names the operator derives from its objects, in one place: host objects are found by them, so
 * two objects must never map to one name and a host object's name must lead back to its object.
 */
interface Named {
  metadata: { name: string; namespace?: string };
}

/** The namespace of a namespaced object (the API server always sets it; "default" is the API's own default). */
export const namespaceOf = (o: Named): string => o.metadata.namespace ?? "default";

/** libvirt domain names are per node; "_" cannot occur in namespace or object names, so this never collides. */
export const domainName = (namespace: string, name: string) => `${namespace}_${name}`;

/** The domain of a VirtualMachine. */
export const vmDomainName = (vm: Named) => domainName(namespaceOf(vm), vm.metadata.name);

/** The object key ("namespace/name") a domain name stands for; undefined for domains not named by the operator. */
export function domainKey(domain: string): string | undefined {
  const m = /^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)_([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)$/.exec(domain);
  return m ? `${m[1]}/${m[3]}` : undefined;
}

/** RBD image of a Volume: "." cannot occur in a namespace, so namespace.name never collides. */
export const volumeImage = (v: Named) => `${namespaceOf(v)}.${v.metadata.name}`;
