import { Type, type Static } from "@sinclair/typebox";
import {
  CephName,
  celQuantity,
  commonStatus,
  DnsLabel,
  immutable,
  Quantity,
  StringEnum,
  validations,
  type KaktusObject,
} from "./schema.js";

/** A Volume is an RBD image (format 2) in Ceph, reconciled by the elected leader. */
export const volumeKind = {
  kind: "Volume",
  plural: "volumes",
  singular: "volume",
  shortNames: ["kvol"],
  scope: "Namespaced",
} as const;

const ImageSource = Type.Object(
  {
    pool: CephName({ description: "Pool of the template image; must be one the operator allows cloning from." }),
    name: CephName({ description: "Template image name." }),
    snapshot: CephName({ description: "Protected snapshot of the image to clone (copy-on-write)." }),
  },
  { description: "Clone a protected snapshot of an image (for example an OS template)." },
);

const VolumeSource = Type.Object(
  {
    image: Type.Optional(ImageSource),
    volume: Type.Optional(
      Type.Object(
        { name: DnsLabel({ description: "A Volume in the same namespace." }) },
        { description: "Copy another Volume of this namespace." },
      ),
    ),
  },
  {
    description: "Where the initial content comes from; omitted: an empty image.",
    ...validations({
      rule: "has(self.image) != has(self.volume)",
      message: "source needs exactly one of image or volume",
    }),
  },
);

export const VolumeSpec = Type.Object(
  {
    pool: CephName({
      description: "Ceph pool of the image; must be one the operator allows.",
      ...validations(immutable("pool")),
    }),
    size: Quantity({
      description: "Image size. May grow, never shrink.",
      ...validations(
        { rule: `${celQuantity("self")}.isGreaterThan(quantity('0'))`, message: "size must be positive" },
        {
          rule: "!string(self).matches('[mun]$')",
          message: "size must be a whole number of bytes, not milli-, micro- or nano-bytes",
        },
        { rule: `${celQuantity("self")}.compareTo(quantity('64Ti')) <= 0`, message: "size must be at most 64Ti" },
        {
          rule: `${celQuantity("self")}.compareTo(${celQuantity("oldSelf")}) >= 0`,
          message: "size may only grow: shrinking an image loses data",
        },
      ),
    }),
    source: Type.Optional(VolumeSource),
    reclaimPolicy: Type.Optional(
      StringEnum(["Delete", "Retain"] as const, {
        default: "Delete",
        description: "Delete removes the image with the object; Retain keeps it.",
      }),
    ),
  },
  validations({
    rule: "has(self.source) == has(oldSelf.source) && (!has(self.source) || self.source == oldSelf.source)",
    message: "source is immutable",
    fieldPath: ".source",
  }),
);

export const VolumeStatus = Type.Object({
  ...commonStatus,
  image: Type.Optional(Type.String({ description: "pool/name of the RBD image." })),
  capacity: Type.Optional(Quantity({ description: "Size of the image as Ceph reports it." })),
  inUseBy: Type.Optional(
    Type.Array(Type.String(), { maxItems: 64, description: "VirtualMachines that reference this Volume." }),
  ),
  watchers: Type.Optional(Type.Integer({ minimum: 0, description: "Clients that have the image open." })),
  attachedTo: Type.Optional(
    Type.Object(
      {
        name: Type.String({ description: "The VirtualMachine's name (in the Volume's namespace)." }),
        uid: Type.String({ description: "The VirtualMachine's UID: a new object of the same name holds no claim." }),
        node: Type.String({ description: "The node that runs it." }),
      },
      {
        description:
          "The VirtualMachine that holds this Volume: one at a time. Set by that VM's agent before its domain uses the image, removed once it no longer does.",
      },
    ),
  ),
});

export type VolumeSpec = Static<typeof VolumeSpec>;
export type VolumeStatus = Static<typeof VolumeStatus>;
export type Volume = KaktusObject<"Volume", VolumeSpec, VolumeStatus>;
