import koffi from "koffi";

/**
 * libvirt's C API through koffi (node-libvirt does not build on Node 20). Loaded only inside worker
 * threads: every call here blocks its thread, and libvirt's last-error is per thread, so the worker
 * that made a failing call is the one that reads its error.
 */
const lib = koffi.load("libvirt.so.0");

koffi.opaque("virConnect");
koffi.opaque("virDomain");
koffi.opaque("virSecret");
/** A string libvirt allocated: koffi frees it with free() once converted. */
koffi.disposable("HeapStr", "str");

export const VirError = koffi.struct("virError", {
  code: "int",
  domain: "int",
  message: "char *",
  level: "int",
  conn: "void *",
  dom: "void *",
  str1: "char *",
  str2: "char *",
  str3: "char *",
  int1: "int",
  int2: "int",
  net: "void *",
});

/** virDomainInterface and virDomainIPAddress (libvirt-domain.h), as virDomainInterfaceAddresses returns them. */
export const VirDomainIPAddress = koffi.struct("virDomainIPAddress", { type: "int", addr: "char *", prefix: "uint" });
export const VirDomainInterface = koffi.struct("virDomainInterface", {
  name: "char *",
  hwaddr: "char *",
  naddrs: "uint",
  addrs: "virDomainIPAddress *",
});

export const ErrorFunc = koffi.proto("void virErrorFunc(void *userData, virError *error)");
export const LifecycleCallback = koffi.proto(
  "int virConnectDomainEventCallback(virConnect *conn, virDomain *dom, int event, int detail, void *opaque)",
);
export const AgentLifecycleCallback = koffi.proto(
  "void virConnectDomainEventAgentLifecycleCallback(virConnect *conn, virDomain *dom, int state, int reason, void *opaque)",
);
export const CloseCallback = koffi.proto("void virConnectCloseFunc(virConnect *conn, int reason, void *opaque)");
export const TimeoutCallback = koffi.proto("void virEventTimeoutCallback(int timer, void *opaque)");

export type Ptr = unknown;

export const virt = {
  connectOpen: lib.func("virConnect *virConnectOpen(const char *name)"),
  connectClose: lib.func("int virConnectClose(virConnect *conn)"),
  connectIsAlive: lib.func("int virConnectIsAlive(virConnect *conn)"),
  connectGetCapabilities: lib.func("HeapStr virConnectGetCapabilities(virConnect *conn)"),
  connectGetDomainCapabilities: lib.func(
    "HeapStr virConnectGetDomainCapabilities(virConnect *conn, const char *emulatorbin, const char *arch, const char *machine, const char *virttype, unsigned int flags)",
  ),
  connSetErrorFunc: lib.func("void virConnSetErrorFunc(virConnect *conn, void *userData, virErrorFunc *handler)"),
  connectListAllDomains: lib.func(
    "int virConnectListAllDomains(virConnect *conn, _Out_ virDomain ***domains, unsigned int flags)",
  ),
  domainLookupByName: lib.func("virDomain *virDomainLookupByName(virConnect *conn, const char *name)"),
  domainLookupByUUIDString: lib.func("virDomain *virDomainLookupByUUIDString(virConnect *conn, const char *uuid)"),
  domainFree: lib.func("int virDomainFree(virDomain *dom)"),
  domainGetName: lib.func("const char *virDomainGetName(virDomain *dom)"),
  domainGetUUIDString: lib.func("int virDomainGetUUIDString(virDomain *dom, _Out_ char *buf)"),
  domainDefineXMLFlags: lib.func(
    "virDomain *virDomainDefineXMLFlags(virConnect *conn, const char *xml, unsigned int flags)",
  ),
  domainCreateXML: lib.func("virDomain *virDomainCreateXML(virConnect *conn, const char *xml, unsigned int flags)"),
  domainGetXMLDesc: lib.func("HeapStr virDomainGetXMLDesc(virDomain *dom, unsigned int flags)"),
  domainCreate: lib.func("int virDomainCreate(virDomain *dom)"),
  domainShutdownFlags: lib.func("int virDomainShutdownFlags(virDomain *dom, unsigned int flags)"),
  domainDestroy: lib.func("int virDomainDestroy(virDomain *dom)"),
  domainUndefineFlags: lib.func("int virDomainUndefineFlags(virDomain *dom, unsigned int flags)"),
  domainSetAutostart: lib.func("int virDomainSetAutostart(virDomain *dom, int autostart)"),
  domainGetAutostart: lib.func("int virDomainGetAutostart(virDomain *dom, _Out_ int *autostart)"),
  domainGetState: lib.func(
    "int virDomainGetState(virDomain *dom, _Out_ int *state, _Out_ int *reason, unsigned int flags)",
  ),
  domainIsPersistent: lib.func("int virDomainIsPersistent(virDomain *dom)"),
  domainAttachDeviceFlags: lib.func(
    "int virDomainAttachDeviceFlags(virDomain *dom, const char *xml, unsigned int flags)",
  ),
  domainDetachDeviceFlags: lib.func(
    "int virDomainDetachDeviceFlags(virDomain *dom, const char *xml, unsigned int flags)",
  ),
  domainUpdateDeviceFlags: lib.func(
    "int virDomainUpdateDeviceFlags(virDomain *dom, const char *xml, unsigned int flags)",
  ),
  domainBlockResize: lib.func(
    "int virDomainBlockResize(virDomain *dom, const char *disk, unsigned long long size, unsigned int flags)",
  ),
  domainAgentSetResponseTimeout: lib.func(
    "int virDomainAgentSetResponseTimeout(virDomain *dom, int timeout, unsigned int flags)",
  ),
  domainGetGuestInfo: lib.func(
    "int virDomainGetGuestInfo(virDomain *dom, unsigned int types, _Out_ void **params, _Out_ int *nparams, unsigned int flags)",
  ),
  typedParamsGetString: lib.func(
    "int virTypedParamsGetString(void *params, int nparams, const char *name, _Out_ const char **value)",
  ),
  typedParamsFree: lib.func("void virTypedParamsFree(void *params, int nparams)"),
  domainInterfaceAddresses: lib.func(
    "int virDomainInterfaceAddresses(virDomain *dom, _Out_ virDomainInterface ***ifaces, unsigned int source, unsigned int flags)",
  ),
  domainInterfaceFree: lib.func("void virDomainInterfaceFree(virDomainInterface *iface)"),
  secretDefineXML: lib.func("virSecret *virSecretDefineXML(virConnect *conn, const char *xml, unsigned int flags)"),
  secretLookupByUUIDString: lib.func("virSecret *virSecretLookupByUUIDString(virConnect *conn, const char *uuid)"),
  secretSetValue: lib.func(
    "int virSecretSetValue(virSecret *secret, const uint8_t *value, size_t size, unsigned int flags)",
  ),
  secretUndefine: lib.func("int virSecretUndefine(virSecret *secret)"),
  secretFree: lib.func("int virSecretFree(virSecret *secret)"),
  getLastError: lib.func("virError *virGetLastError(void)"),
  resetLastError: lib.func("void virResetLastError(void)"),
  eventRegisterDefaultImpl: lib.func("int virEventRegisterDefaultImpl(void)"),
  eventRunDefaultImpl: lib.func("int virEventRunDefaultImpl(void)"),
  eventAddTimeout: lib.func(
    "int virEventAddTimeout(int timeout, virEventTimeoutCallback *cb, void *opaque, void *freecb)",
  ),
  connectDomainEventRegisterAny: lib.func(
    "int virConnectDomainEventRegisterAny(virConnect *conn, virDomain *dom, int eventID, virConnectDomainEventCallback *cb, void *opaque, void *freecb)",
  ),
  /** The same function, typed for the guest agent's callback (koffi checks callback types). */
  connectDomainEventRegisterAgent: lib.func(
    "int virConnectDomainEventRegisterAny(virConnect *conn, virDomain *dom, int eventID, virConnectDomainEventAgentLifecycleCallback *cb, void *opaque, void *freecb)",
  ),
  connectRegisterCloseCallback: lib.func(
    "int virConnectRegisterCloseCallback(virConnect *conn, virConnectCloseFunc *cb, void *opaque, void *freecb)",
  ),
  connectSetKeepAlive: lib.func("int virConnectSetKeepAlive(virConnect *conn, int interval, unsigned int count)"),
  free: koffi.load("libc.so.6").func("void free(void *ptr)"),
};

export { koffi };
