// Pieces checked without a server: the stall watchdog on fake time, the mapping
// of proto sampling fields whose zero means "unset", and options validation.
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Platform.Core.Protos;
using Platform.Engine;

namespace Platform.Worker.Tests;

public sealed class UnitTests
{
    private static EngineStats Stats(int running, int waiting, long steps) => new(running, waiting, 0, 0, 0, 0, 0, 0, 0, 0, steps);

    [Fact]
    public void Watchdog_reports_an_engine_with_work_and_no_finished_step_after_the_limit()
    {
        var time = new FakeTimeProvider();
        var stats = Stats(1, 0, 10);
        var watchdog = new EngineWatchdog(() => stats, TimeSpan.FromSeconds(60), time);
        Assert.Null(watchdog.Stalled());
        time.Advance(TimeSpan.FromSeconds(59));
        Assert.Null(watchdog.Stalled());
        time.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal(TimeSpan.FromSeconds(61), watchdog.Stalled());

        stats = Stats(1, 0, 11);  // a step finished: healthy again, and the clock restarts
        Assert.Null(watchdog.Stalled());
        time.Advance(TimeSpan.FromSeconds(30));
        Assert.Null(watchdog.Stalled());

        stats = Stats(0, 0, 11);  // idle is never a stall
        time.Advance(TimeSpan.FromHours(1));
        Assert.Null(watchdog.Stalled());
        stats = Stats(0, 2, 11);  // work arrives: the limit counts from now
        Assert.Null(watchdog.Stalled());
        time.Advance(TimeSpan.FromSeconds(61));
        Assert.NotNull(watchdog.Stalled());
    }

    [Fact]
    public void Zero_proto_fields_mean_unset()
    {
        var defaults = ProtoMapping.ToSampling(new SamplingOptions(), promptTokens: 100, maxContextTokens: 4096);
        Assert.Equal(3996, defaults.MaxTokens);
        Assert.Equal(1.0, defaults.TopP);
        Assert.Equal(0, defaults.Temperature);
        Assert.Null(defaults.Seed);

        var set = ProtoMapping.ToSampling(new SamplingOptions { MaxTokens = 7, TopP = 0.5, Temperature = 0.8, Seed = 0, Stop = { "\n" }, StopTokenIds = { 3 }, MinP = 0.2 }, 10, 4096);
        Assert.Equal(7, set.MaxTokens);
        Assert.Equal(0.2, set.MinP);
        Assert.Equal(0.5, set.TopP);
        Assert.Equal(0.8, set.Temperature);
        Assert.Equal(0ul, set.Seed);
        Assert.Equal(["\n"], set.StopStrings);
        Assert.Equal([3], set.StopTokenIds);
    }

    [Fact]
    public void Options_validation_names_the_switch_to_fix()
    {
        var validator = new WorkerOptionsValidator();
        var ok = validator.Validate(null, new WorkerOptions { ModelDirectory = TestModel.Dir });
        Assert.True(ok.Succeeded, ok.FailureMessage);

        var bad = validator.Validate(null, new WorkerOptions
        {
            ModelDirectory = "",
            Host = "example.org",
            Port = 9000,
            HttpPort = 9000,
            DrainGraceSeconds = double.NaN,
            KvSubscriberBufferBatches = 0,
            Engine = new EngineOptions { MaxBatchTokens = 0 },
        });
        Assert.False(bad.Succeeded);
        var failures = bad.Failures!.ToList();
        Assert.Contains(failures, f => f.Contains("pass --model DIR"));
        Assert.Contains(failures, f => f.Contains("--host 'example.org' is not an IP address"));
        Assert.Contains(failures, f => f.Contains("--port and --http-port are both 9000"));
        Assert.Contains(failures, f => f.Contains("--drain-grace-seconds"));
        Assert.Contains(failures, f => f.Contains("--kv-subscriber-buffer"));
        Assert.Contains(failures, f => f.Contains("MaxBatchTokens must be positive") && f.Contains("--max-batch-tokens"));
    }

    [Fact]
    public void The_memory_budget_switch_reaches_the_engine_less_the_host_tier()
    {
        var config = new ConfigurationBuilder()
            .AddCommandLine(["--model", TestModel.Dir, "--memory-budget", "6GiB", "--kv-tier", "host", "--kv-host-memory", "1GiB"], WorkerCommandLine.SwitchMappings.ToDictionary())
            .Build();
        var o = config.GetSection(WorkerOptions.Section).Get<WorkerOptions>()!;
        // The host KV tier lives in the worker's budget too: the engine sizes its pool from the rest.
        Assert.Equal(5L << 30, o.ResolvedEngine.MemoryBudgetBytes);
        Assert.True(new WorkerOptionsValidator().Validate(null, o).Succeeded);
        Assert.Null(new WorkerOptions().ResolvedEngine.MemoryBudgetBytes);
        Assert.Equal(6L << 30, new WorkerOptions { MemoryBudget = "6GiB" }.ResolvedEngine.MemoryBudgetBytes);

        var validator = new WorkerOptionsValidator();
        var notASize = validator.Validate(null, new WorkerOptions { ModelDirectory = TestModel.Dir, MemoryBudget = "plenty" });
        Assert.Contains(notASize.Failures!, f => f.Contains("--memory-budget 'plenty' is not a size"));
        var eatenByTier = validator.Validate(null, new WorkerOptions
        {
            ModelDirectory = TestModel.Dir,
            MemoryBudget = "1GiB",
            KvTier = new Platform.KvCache.KvTierOptions { Mode = "host", HostMemory = "2GiB" },
        });
        Assert.Contains(eatenByTier.Failures!, f => f.Contains("lower --kv-host-memory"));
    }

    [Fact]
    public void Kv_tier_options_are_validated_with_the_switch_to_fix()
    {
        var validator = new WorkerOptionsValidator();
        Assert.Equal("off", new WorkerOptions().KvTier.Mode);
        var bad = validator.Validate(null, new WorkerOptions
        {
            ModelDirectory = TestModel.Dir,
            KvTier = new Platform.KvCache.KvTierOptions { Mode = "remote", HostMemory = "a lot" },
        });
        Assert.False(bad.Succeeded);
        var failures = bad.Failures!.ToList();
        Assert.Contains(failures, f => f.Contains("--redis HOST:PORT"));
        Assert.Contains(failures, f => f.Contains("--kv-host-memory"));
        var typo = validator.Validate(null, new WorkerOptions { ModelDirectory = TestModel.Dir, KvTier = new Platform.KvCache.KvTierOptions { Mode = "redis" } });
        Assert.Contains(typo.Failures!, f => f.Contains("--kv-tier off, host or remote"));
        var ok = validator.Validate(null, new WorkerOptions
        {
            ModelDirectory = TestModel.Dir,
            KvTier = new Platform.KvCache.KvTierOptions { Mode = "remote", HostMemory = "256MB", Remote = new Platform.KvCache.RemoteTierOptions { Address = "127.0.0.1:6379" } },
        });
        Assert.True(ok.Succeeded, ok.FailureMessage);
    }

    [Fact]
    public async Task Health_while_loading_and_after_a_failed_load()
    {
        string dir = Path.Combine(TestModel.Root, "unloadable");
        Directory.CreateDirectory(dir);
        await File.WriteAllTextAsync(Path.Combine(dir, "config.json"), "{}");
        var options = Options.Create(new WorkerOptions { ModelDirectory = dir, AnnounceOnStdout = false });
        var lifetime = new StubLifetime();
        using var peers = new KvPeers(options);
        using var kvMetrics = new Platform.KvCache.KvTierMetrics();
        using var engines = new EngineHost(options, NullLoggerFactory.Instance, lifetime, new WorkerAnnouncer(options), kvMetrics, peers);
        var watchdog = new EngineWatchdog(engines, options, TimeProvider.System);
        var live = new EngineLivenessCheck(engines, watchdog);
        var ready = new EngineReadinessCheck(engines, watchdog);
        async Task<HealthCheckResult> Check(IHealthCheck check) => await check.CheckHealthAsync(new HealthCheckContext());

        Assert.Equal(EngineState.Loading, engines.State);
        Assert.Equal(HealthStatus.Healthy, (await Check(live)).Status);
        var loading = await Check(ready);
        Assert.Equal(HealthStatus.Unhealthy, loading.Status);
        Assert.Contains("loading", loading.Description);

        await engines.StartAsync(CancellationToken.None);
        await Assert.ThrowsAnyAsync<Exception>(() => engines.Ready.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(EngineState.Failed, engines.State);
        var dead = await Check(live);
        Assert.Equal(HealthStatus.Unhealthy, dead.Status);
        Assert.Contains("failed to load", dead.Description);
        Assert.Equal(HealthStatus.Unhealthy, (await Check(ready)).Status);
        Assert.True(lifetime.StopRequested, "a failed load stops the host");
    }

    private sealed class StubLifetime : IHostApplicationLifetime
    {
        public bool StopRequested { get; private set; }
        public CancellationToken ApplicationStarted => CancellationToken.None;
        public CancellationToken ApplicationStopping => CancellationToken.None;
        public CancellationToken ApplicationStopped => CancellationToken.None;
        public void StopApplication() => StopRequested = true;
    }
}
