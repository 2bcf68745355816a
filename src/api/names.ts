/**
 * The names the operator derives from its objects, in one place: host objects are found by them, so
 * two objects must never map to one name and a host object's name must lead back to its object.
 * And the marks: a name alone never makes a host object the operator's; the mark of the object's
 * UID on it does (RBD image metadata, libvirt domain metadata, a link's alias).
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

/** Adopting a host object made by someone else is an explicit opt-in on the object, never a side effect of a name. */
export const adoptAnnotation = "kaktus.kowabunga.cloud/adopt";
export const wantsAdoption = (o: { metadata: { annotations?: Record<string, string> } }) =>
  o.metadata.annotations?.[adoptAnnotation] === "true";

/** The alias the operator gives the links it makes for an object (a bridge, a VLAN port). */
export const linkMark = (uid: string | undefined) => `kaktus:${uid ?? ""}`;
