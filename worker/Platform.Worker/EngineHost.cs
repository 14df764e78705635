// Owns the engine for the process: loads the model on a background thread when
// the host starts (so Kestrel answers health probes while a large model loads:
// liveness passes, readiness waits), exposes it once loaded, and disposes it
// when the service provider is disposed, after the server has stopped. An
// hf:// model is first downloaded (or found) in the hub cache (WorkerModel); a
// failed download stops the worker like a model that fails to load.
using System.Diagnostics;
using Microsoft.Extensions.Options;
using Platform.Core.Workers;
using Platform.Engine;

namespace Platform.Worker;

public enum EngineState { Loading, Ready, Failed }

public sealed class EngineHost : IHostedService, IDisposable
{
    private readonly WorkerOptions _options;
    private readonly ILogger<EngineHost> _logger;
    private readonly ILoggerFactory _loggerFactory;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly WorkerAnnouncer _announcer;
    private readonly TaskCompletionSource<LlmEngine> _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task _loading = Task.CompletedTask;
    private volatile LlmEngine? _engine;

    private readonly KvPeers _peers;
    private readonly Platform.KvCache.KvTierMetrics _kvMetrics;

    public EngineHost(IOptions<WorkerOptions> options, ILoggerFactory loggerFactory, IHostApplicationLifetime lifetime, WorkerAnnouncer announcer,
        Platform.KvCache.KvTierMetrics kvMetrics, KvPeers peers)
    {
        _peers = peers;
        _kvMetrics = kvMetrics;
        _options = options.Value;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<EngineHost>();
        _lifetime = lifetime;
        _announcer = announcer;
    }

    /// <summary>With DistAttention on, lends this worker's spare KV blocks to peers (null otherwise or while loading).</summary>
    public Engine.DistAttention.KvLender? Lender { get; private set; }

    /// <summary>The engine once loaded, else null.</summary>
    public LlmEngine? Engine => _engine;
    public EngineState State => _engine is not null ? EngineState.Ready : _ready.Task.IsFaulted ? EngineState.Failed : EngineState.Loading;
    /// <summary>Why loading failed (null while loading or after success).</summary>
    public string? LoadError { get; private set; }
    /// <summary>Completes with the engine when loaded; faults if loading fails.</summary>
    public Task<LlmEngine> Ready => _ready.Task;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _loading = Task.Factory.StartNew(Load, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        return Task.CompletedTask;
    }

    private void Load()
    {
        Log.ModelLoading(_logger, _options.ModelDirectory, _options.ResolvedServedModelName);
        var watch = Stopwatch.StartNew();
        try
        {
            string directory = WorkerModel.ResolveAsync(_options.ModelDirectory, _logger).GetAwaiter().GetResult();
            var engine = LlmEngine.Load(directory, _options.ResolvedEngine, progress: null, _loggerFactory.CreateLogger<LlmEngine>());
            if (_options.KvTier.ParsedMode != Platform.KvCache.KvTierMode.Off)
            {
                try
                {
                    var tier = _options.ResolvedKvTier;
                    var stores = Platform.KvCache.KvTierStores.CreateAsync(tier, engine.KvTierLayout(tier), engine.Fingerprint.Id, _kvMetrics,
                        _loggerFactory.CreateLogger<Platform.KvCache.RedisKvTier>()).GetAwaiter().GetResult();
                    if (stores is not null) engine.AttachKvTierAsync(stores, _kvMetrics).GetAwaiter().GetResult();
                }
                catch
                {
                    engine.Dispose();
                    throw;
                }
            }
            if (_options.DistAttentionEnabled)
            {
                Lender = new Engine.DistAttention.KvLender(engine);
                engine.DistAttention = _peers.CreatePlanner(engine.Options);
            }
            _engine = engine;
            Log.ModelLoaded(_logger, watch.Elapsed.TotalSeconds, engine.Fingerprint.Canonical, engine.TotalKvBlocks, engine.MaxContextTokens);
            _announcer.Announce(WorkerAnnouncements.Ready);
            _ready.SetResult(engine);
        }
        catch (Exception e)
        {
            LoadError = e.Message;
            // A failed download was logged with its reason (no stack trace: the message says the fix).
            // So was a device that is not there (no stack trace either: the message names the device and the fix).
            if (e is Platform.Engine.Torch.DeviceUnavailableException) Log.DeviceUnavailable(_logger, e.Message);
            else if (e is not Platform.Core.Models.Hub.HubDownloadException) Log.ModelLoadFailed(_logger, _options.ModelDirectory, e);
            _lifetime.StopApplication();
            _ready.SetException(e);
        }
    }

    /// <summary>Waits for a load in progress (it cannot be interrupted); the engine itself is disposed with the container.</summary>
    public Task StopAsync(CancellationToken cancellationToken) => _loading.WaitAsync(cancellationToken);

    public void Dispose()
    {
        Lender?.Dispose();
        _engine?.Dispose();
    }
}

/// <summary>Prints the machine-readable PLATFORM_WORKER_* lines on stdout when enabled.</summary>
public sealed class WorkerAnnouncer(IOptions<WorkerOptions> options)
{
    private readonly bool _enabled = options.Value.AnnounceOnStdout;
    private readonly object _lock = new();

    public void Announce(string line)
    {
        if (!_enabled) return;
        lock (_lock)
        {
            Console.Out.WriteLine(line);
            Console.Out.Flush();
        }
    }
}
