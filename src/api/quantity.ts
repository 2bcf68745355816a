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

/** Suffixes below one (milli, micro, nano): a byte count with one is a fraction. */
const divisors: Record<string, bigint> = { m: 1000n, u: 1000n ** 2n, n: 1000n ** 3n };

/** Exponents beyond this are refused: 10^64 bytes is no size, and the work stays bounded. */
const maxExponent = 64;

/**
 * Bytes in a quantity, rounded up to a whole byte: every form Kubernetes' quantity pattern admits
 * (".5Gi", "1.", "1500m", "1e3"). Negative, malformed or absurd (exponent beyond ±64, more than 64
 * digits) quantities throw, quickly.
 */
export function toBytes(quantity: string | number): bigint {
  const text = String(quantity).trim();
  const m = /^\+?(\d*)(?:\.(\d*))?(?:([eE])([+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$/.exec(text);
  const [, whole = "", fraction = "", e, exponent = "0", suffix = ""] = m ?? [];
  if (!m || whole + fraction === "" || whole.length + fraction.length > 64)
    throw new QuantityError(`"${text}" is not a byte quantity`);
  const exp = Number(exponent);
  if (e && Math.abs(exp) > maxExponent) throw new QuantityError(`"${text}" is out of range`);
  let numerator = BigInt(whole + fraction) * (multipliers[suffix] ?? 1n);
  let denominator = 10n ** BigInt(fraction.length) * (divisors[suffix] ?? 1n);
  if (e) {
    if (exp >= 0) numerator *= 10n ** BigInt(exp);
    else denominator *= 10n ** BigInt(-exp);
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
