/**
 * Byte quantities as Kubernetes writes them ("20Gi", "1.5G", "1048576"), exactly, as BigInt.
 * client-node's quantityToScalar rejects decimals with binary suffixes, so this small parser
 * covers what sizes and memory use: an optional fraction, decimal or binary suffixes, and e-notation.
 */
const multipliers: Record<string, bigint> = {
  "": 1n,
  k: 1000n,
  M: 1000n ** 2n,
  G: 1000n ** 3n,
  T: 1000n ** 4n,
  P: 1000n ** 5n,
  E: 1000n ** 6n,
  Ki: 1n << 10n,
  Mi: 1n << 20n,
  Gi: 1n << 30n,
  Ti: 1n << 40n,
  Pi: 1n << 50n,
  Ei: 1n << 60n,
};

export class QuantityError extends Error {
  override name = "QuantityError";
}

/** Bytes in a quantity, rounded up to a whole byte. Negative or malformed quantities throw. */
export function toBytes(quantity: string | number): bigint {
  const text = String(quantity).trim();
  const m = /^\+?(\d+)(?:\.(\d+))?(?:([eE])([+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E))?$/.exec(text);
  if (!m) throw new QuantityError(`"${text}" is not a byte quantity`);
  const [, whole = "0", fraction = "", e, exponent = "0", suffix = ""] = m;
  let numerator = BigInt(whole + fraction) * multipliers[suffix]!;
  let denominator = 10n ** BigInt(fraction.length);
  if (e) {
    const exp = BigInt(exponent);
    if (exp >= 0n) numerator *= 10n ** exp;
    else denominator *= 10n ** -exp;
  }
  return (numerator + denominator - 1n) / denominator;
}

/** The shortest exact binary-suffixed form of a byte count ("20Gi", "1536Mi", "1000"). */
export function formatBytes(bytes: bigint): string {
  for (const suffix of ["Ei", "Pi", "Ti", "Gi", "Mi", "Ki"]) {
    const unit = multipliers[suffix]!;
    if (bytes >= unit && bytes % unit === 0n) return `${bytes / unit}${suffix}`;
  }
  return String(bytes);
}
