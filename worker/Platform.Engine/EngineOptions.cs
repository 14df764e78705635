// Engine settings with defaults that suit a CPU; validated at start with
// messages that say which setting to change.
namespace Platform.Engine;

public sealed record EngineOptions
{
    /// <summary>Tokens per KV block; a power of two. Router and workers must agree (it is part of the model fingerprint).</summary>
    public int BlockSize { get; init; } = 16;
    /// <summary>Token budget of one step: chunked prefill splits longer prompts.</summary>
    public int MaxBatchTokens { get; init; } = 512;
    /// <summary>
    /// Target wall time of one step in ms: prefill chunks are sized by their predicted cost (attention grows with
    /// the context) so a step stays near this, MaxBatchTokens remaining the cap; 0 bounds steps by tokens only.
    /// It bounds how long decodes, new requests and an abort wait behind a long prefill. 250 measured best on the
    /// small preset on a 2-core machine (docs/engine.md: shorter waits and no less prefill throughput than 500 or 1000).
    /// </summary>
    public int TargetStepMs { get; init; } = 250;
    public int MaxRunningRequests { get; init; } = 64;
    /// <summary>Exact KV pool size in blocks (wins over the byte settings).</summary>
    public int? NumKvBlocks { get; init; }
    /// <summary>KV pool size in bytes (wins over the fraction).</summary>
    public long? KvCacheBytes { get; init; }
    /// <summary>Fraction of the memory left after the weights that the KV pool may take (KvMemoryBudget: MemAvailable, the cgroup limit, MemoryBudgetBytes).</summary>
    public double KvCacheMemoryFraction { get; init; } = 0.3;
    /// <summary>Memory this engine's process may use in all (weights, KV pool, runtime); the KV pool's fraction applies to what is left of it. Null: no budget beyond the host's and the cgroup's.</summary>
    public long? MemoryBudgetBytes { get; init; }
    /// <summary>float32 (default, fastest on CPU), bfloat16 or float16.</summary>
    public string ComputeDtype { get; init; } = "float32";
    /// <summary>
    /// Width of the projection and embedding weights: auto (the checkpoint's bfloat16/float16, widened in
    /// registers by the GEMV: half the bytes per decode step), float32, bfloat16 or float16 (Model.WeightDtype).
    /// </summary>
    public string WeightDtype { get; init; } = Model.WeightDtype.Auto;
    /// <summary>
    /// Where the model, the KV pool and sampling live: cpu (our AVX2/AVX-512 kernels where they apply) or
    /// cuda[:N] (the device-generic libtorch path, LlamaModel.Device.cs); parsed by Platform.Core's ComputeDevice.
    /// </summary>
    public string Device { get; init; } = Platform.Core.Workers.ComputeDevice.CpuName;
    /// <summary>
    /// none, or int8: the decoder layers' projections quantized at load (symmetric, one fp16 scale per 32
    /// inputs; about 1.06 bytes per weight) and multiplied by the int8 GEMV; float32 compute only (Model.Quantization).
    /// </summary>
    public string Quantization { get; init; } = Model.Quantization.None;
    /// <summary>Threads for libtorch and our kernels; default: every core.</summary>
    public int? Threads { get; init; }
    /// <summary>Caps the context below the model's max_position_embeddings.</summary>
    public int? MaxContextTokens { get; init; }
    /// <summary>Seed for requests that do not bring one (null: random per process).</summary>
    public ulong? DefaultSeed { get; init; }

    /// <summary>DistAttention creditor: lend KV blocks this worker does not need to peers' sequences.</summary>
    public bool LendKvBlocks { get; init; }
    /// <summary>Fraction of the pool a creditor always keeps for its own requests.</summary>
    public double LendReserveFraction { get; init; } = 0.1;
    /// <summary>DistAttention debtor: the fraction of this worker's pool one borrowing sequence may use locally.</summary>
    public double DistLocalFraction { get; init; } = 0.9;
    /// <summary>At most this many creditors hold parts of one sequence.</summary>
    public int DistMaxPeers { get; init; } = 4;
    /// <summary>Lease on lent blocks: a creditor reclaims them this long after the debtor last renewed or attended.</summary>
    public int DistLeaseMs { get; init; } = 15_000;
    /// <summary>A creditor that does not answer one layer's attention within this fails the sequence.</summary>
    public int DistAttendTimeoutMs { get; init; } = 10_000;

    public void Validate()
    {
        if (LendReserveFraction is < 0 or >= 1) throw new ArgumentException($"LendReserveFraction must be in [0, 1), got {LendReserveFraction}.");
        if (DistLocalFraction is <= 0 or > 1) throw new ArgumentException($"DistLocalFraction must be in (0, 1], got {DistLocalFraction}.");
        if (DistMaxPeers < 1) throw new ArgumentException($"DistMaxPeers must be positive, got {DistMaxPeers}.");
        if (DistLeaseMs < 100) throw new ArgumentException($"DistLeaseMs must be at least 100, got {DistLeaseMs}.");
        if (DistAttendTimeoutMs < 1) throw new ArgumentException($"DistAttendTimeoutMs must be positive, got {DistAttendTimeoutMs}.");
        if (BlockSize < 1 || (BlockSize & (BlockSize - 1)) != 0)
            throw new ArgumentException($"BlockSize must be a power of two (e.g. 16), got {BlockSize}.");
        if (MaxBatchTokens < 1) throw new ArgumentException($"MaxBatchTokens must be positive, got {MaxBatchTokens}.");
        if (TargetStepMs < 0) throw new ArgumentException($"TargetStepMs must be 0 (no time bound) or positive, got {TargetStepMs}.");
        if (MaxRunningRequests < 1) throw new ArgumentException($"MaxRunningRequests must be positive, got {MaxRunningRequests}.");
        if (NumKvBlocks is < 1) throw new ArgumentException($"NumKvBlocks must be positive, got {NumKvBlocks}.");
        if (KvCacheBytes is < 1) throw new ArgumentException($"KvCacheBytes must be positive, got {KvCacheBytes}.");
        if (MemoryBudgetBytes is < 1) throw new ArgumentException($"MemoryBudgetBytes must be positive, got {MemoryBudgetBytes}.");
        if (KvCacheMemoryFraction is <= 0 or > 1) throw new ArgumentException($"KvCacheMemoryFraction must be in (0, 1], got {KvCacheMemoryFraction}.");
        if (Threads is < 1) throw new ArgumentException($"Threads must be positive, got {Threads}.");
        if (Model.WeightDtype.Validate(WeightDtype) is { } weightDtypeError) throw new ArgumentException($"WeightDtype: {weightDtypeError}");
        if (Platform.Core.Workers.ComputeDevice.Validate(Device) is { } deviceError) throw new ArgumentException($"Device: {deviceError}");
        if (Model.Quantization.Validate(Quantization) is { } quantizationError) throw new ArgumentException($"Quantization: {quantizationError}");
        if (Quantization.Equals(Model.Quantization.Q8, StringComparison.OrdinalIgnoreCase) && !ComputeDtype.Equals("float32", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException($"Quantization: int8 needs ComputeDtype float32 (its kernels widen int8 to float32), got {ComputeDtype}; use float32 compute or quantization none.");
        if (Quantization.Equals(Model.Quantization.Q8, StringComparison.OrdinalIgnoreCase) && Platform.Core.Workers.ComputeDevice.Validate(Device) is null
            && !Platform.Core.Workers.ComputeDevice.Parse(Device).IsCpu)
            throw new ArgumentException($"Quantization: int8 runs on the CPU kernels only, but Device is {Device}; use quantization none on a GPU.");
        if (MaxContextTokens is < 1) throw new ArgumentException($"MaxContextTokens must be positive, got {MaxContextTokens}.");
    }
}
