// Builds the stores below an engine's device pool from the worker's settings:
// host memory always, plus the shared Redis-compatible store in remote mode.
// The engine only attaches what this returns, so which stores exist, how big
// they are and how they connect is decided here, next to the stores. A remote
// store that is down is not an error (the tier is skipped until it answers);
// settings that cannot work are, with messages that name the switch.
using Microsoft.Extensions.Logging;

namespace Platform.KvCache;

/// <summary>The host tier and, in remote mode, the shared store, for blocks of one layout.</summary>
public sealed class KvTierStores(KvTierOptions options, KvBlockLayout layout, HostKvTier host, RedisKvTier? remote)
{
    public KvTierOptions Options { get; } = options;
    public KvBlockLayout Layout { get; } = layout;
    public HostKvTier Host { get; } = host;
    public RedisKvTier? Remote { get; } = remote;

    /// <summary>
    /// Creates the stores <paramref name="options"/> ask for, or null when the tier is off.
    /// <paramref name="fingerprintId"/> names the model in remote keys, so engines of other models never share blocks.
    /// </summary>
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA2000:Dispose objects before losing scope", Justification = "The Redis tier passes to the stores, then to the engine's KvTierService, which disposes it (LlmEngine.Dispose disposes the service).")]
    public static async Task<KvTierStores?> CreateAsync(KvTierOptions options, KvBlockLayout layout, string fingerprintId, KvTierMetrics metrics,
        ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(layout);
        var errors = options.Validate().ToList();
        if (errors.Count > 0) throw new ArgumentException(string.Join(" ", errors));
        var mode = options.ParsedMode;
        if (mode == KvTierMode.Off) return null;
        var host = new HostKvTier(options.HostMemoryBytes, layout.EncodedBytes);
        RedisKvTier? remote = mode == KvTierMode.Remote
            ? await RedisKvTier.ConnectAsync(options.Remote, fingerprintId, metrics, logger, cancellationToken: cancellationToken).ConfigureAwait(false)
            : null;
        return new KvTierStores(options, layout, host, remote);
    }
}
