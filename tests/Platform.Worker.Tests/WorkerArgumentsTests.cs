// Every launcher writes platform-worker's command line through Core's
// WorkerArguments. These tests bind its output with the worker's own parser
// (WorkerCommandLine.SwitchMappings + WorkerOptions binding, as WorkerHost does)
// and check that each field arrives where the worker reads it, so a renamed or
// remapped switch fails here instead of in a pod that will not start.
using Microsoft.Extensions.Configuration;
using Platform.Core.Workers;

namespace Platform.Worker.Tests;

public sealed class WorkerArgumentsTests
{
    /// <summary>Every field set, each to a value that differs from the worker's default.</summary>
    private static readonly WorkerArguments Everything = new()
    {
        Model = "/models/m",
        DownloadOnly = true,
        ServedModelName = "served",
        WorkerId = "w-3",
        Host = "10.1.2.3",
        Port = 50099,
        HttpPort = 8099,
        Dtype = "bfloat16",
        WeightDtype = "float16",
        Quantization = "int8",
        Device = "cuda:1",
        MaxContext = 4096,
        BlockSize = 32,
        MaxBatchTokens = 777,
        TargetStepMs = 321,
        MaxRunningRequests = 9,
        KvMemoryFraction = 0.45,
        KvBlocks = 123,
        KvBytes = 1L << 33,
        Threads = 3,
        Seed = 18_000_000_000_000_000_000UL,
        LogFormat = "json",
        LogLevel = "Debug",
        DrainGraceSeconds = 12.5,
        KvSubscriberBuffer = 99,
        MaxMessageMb = 17,
        HealthPublishSeconds = 2.5,
        EngineStallSeconds = 42,
        Announce = false,
        DistAttention = true,
        KvTokens = 8192,
        MemoryBudget = "6GiB",
        KvTier = "remote",
        Redis = "redis.ns:6379",
        RedisUser = "kv",
        RedisPassword = "s3cret",
        RedisTls = true,
        KvKeyPrefix = "kv:ns:m:",
        KvTtlSeconds = 600,
        KvRemoteTimeoutMs = 250,
        KvHostMemory = "2GiB",
        KvStoreDtype = "float16",
        KvWriteQueue = 64,
        DistMaxPeers = 2,
        DistLeaseMs = 9000,
        LendReserveFraction = 0.25,
        Peers = ["http://a:50051", "http://b:50051"],
    };

    private static (WorkerOptions Options, IConfiguration Config) Bind(IEnumerable<string> args)
    {
        var config = new ConfigurationBuilder().AddCommandLine([.. args], WorkerCommandLine.SwitchMappings.ToDictionary()).Build();
        return (config.GetSection(WorkerOptions.Section).Get<WorkerOptions>()!, config);
    }

    [Fact]
    public void The_test_sets_every_field_and_the_builder_writes_every_switch_the_worker_knows()
    {
        foreach (var property in typeof(WorkerArguments).GetProperties().Where(p => p.CanWrite))
            Assert.True(property.GetValue(Everything) is not null, $"set WorkerArguments.{property.Name} in this test's Everything");
        var args = Everything.ToArgs();
        var written = args.Where((_, i) => i % 2 == 0).ToList();
        Assert.Equal(written.Count, written.Distinct().Count());
        foreach (var name in written) Assert.True(WorkerCommandLine.SwitchMappings.ContainsKey(name), $"platform-worker has no switch {name}");
        foreach (var name in WorkerCommandLine.SwitchMappings.Keys) Assert.True(written.Contains(name), $"WorkerArguments cannot write {name}");
    }

    [Fact]
    public void Every_field_round_trips_through_the_workers_parser()
    {
        var (o, config) = Bind(Everything.ToArgs());
        var e = o.Engine;
        var kv = o.KvTier;
        Assert.Equal(("/models/m", "served", "w-3", "10.1.2.3", 50099, 8099), (o.ModelDirectory, o.ServedModelName, o.WorkerId, o.Host, o.Port, o.HttpPort));
        Assert.Equal(("bfloat16", 4096, 32, 777, 9, 0.45), (e.ComputeDtype, e.MaxContextTokens, e.BlockSize, e.MaxBatchTokens, e.MaxRunningRequests, e.KvCacheMemoryFraction));
        Assert.Equal((123, 1L << 33, 3, 18_000_000_000_000_000_000UL), (e.NumKvBlocks!.Value, e.KvCacheBytes!.Value, e.Threads!.Value, e.DefaultSeed!.Value));
        Assert.Equal(("json", "Debug"), (o.LogFormat, config["Logging:LogLevel:Default"]));
        Assert.Equal((12.5, 99, 17, 2.5, 42.0, false), (o.DrainGraceSeconds, o.KvSubscriberBufferBatches, o.MaxMessageMegabytes, o.HealthPublishSeconds, o.EngineStallSeconds, o.AnnounceOnStdout));
        Assert.True(o.DistAttentionEnabled);
        Assert.Equal((8192, "6GiB"), (o.KvTokens!.Value, o.MemoryBudget));
        Assert.Equal(("remote", "redis.ns:6379", "kv", "s3cret", true), (kv.Mode, kv.Remote.Address, kv.Remote.User, kv.Remote.Password, kv.Remote.Tls));
        Assert.Equal(("kv:ns:m:", 600, 250), (kv.Remote.KeyPrefix, kv.Remote.TtlSeconds, kv.Remote.OperationTimeoutMs));
        Assert.Equal(("2GiB", "float16", 64), (kv.HostMemory, kv.StoreDtype, kv.WriteQueueBlocks));
        Assert.Equal((2, 9000, 0.25), (e.DistMaxPeers, e.DistLeaseMs, e.LendReserveFraction));
        Assert.Equal(321, e.TargetStepMs);
        Assert.Equal("float16", e.WeightDtype);
        Assert.Equal("int8", e.Quantization);
        Assert.Equal("cuda:1", e.Device);
        Assert.Equal(["http://a:50051", "http://b:50051"], o.PeerAddresses);
        Assert.True(o.DownloadOnly);
        Assert.Empty(kv.Validate());
    }

    [Fact]
    public void Unset_fields_are_left_out_so_the_workers_defaults_apply()
    {
        Assert.Empty(new WorkerArguments().ToArgs());
        var (o, _) = Bind(new WorkerArguments { Model = "/m", DistAttention = false, Peers = [] }.ToArgs());
        var defaults = new WorkerOptions();
        Assert.Equal(("/m", defaults.Port, defaults.Host, "off"), (o.ModelDirectory, o.Port, o.Host, o.DistAttention));
        Assert.Empty(o.PeerAddresses);
        Assert.Equal(defaults.Engine, o.Engine);
        Assert.False(o.DownloadOnly);
    }

    [Fact]
    public void An_unknown_weight_dtype_is_refused_naming_the_choices()
    {
        var (o, _) = Bind(new WorkerArguments { Model = TestModel.Dir, WeightDtype = "int4" }.ToArgs());
        var result = new WorkerOptionsValidator().Validate(null, o);
        Assert.True(result.Failed);
        Assert.Contains("unknown weight dtype 'int4'; use one of auto, float32, bfloat16, float16", result.FailureMessage, StringComparison.Ordinal);
        Assert.Contains("--weight-dtype", result.FailureMessage, StringComparison.Ordinal);

        var (valid, _) = Bind(new WorkerArguments { Model = TestModel.Dir, WeightDtype = "bfloat16" }.ToArgs());
        Assert.True(new WorkerOptionsValidator().Validate(null, valid).Succeeded);
        Assert.Equal("auto", new WorkerOptions().Engine.WeightDtype);
    }

    [Fact]
    public void An_unknown_quantization_or_int8_without_float32_compute_is_refused()
    {
        var (unknown, _) = Bind(new WorkerArguments { Model = TestModel.Dir, Quantization = "int4" }.ToArgs());
        var result = new WorkerOptionsValidator().Validate(null, unknown);
        Assert.True(result.Failed);
        Assert.Contains("unknown quantization 'int4'; use one of none, int8", result.FailureMessage, StringComparison.Ordinal);
        Assert.Contains("--quantization", result.FailureMessage, StringComparison.Ordinal);

        var (mixed, _) = Bind(new WorkerArguments { Model = TestModel.Dir, Quantization = "int8", Dtype = "bfloat16" }.ToArgs());
        var mixedResult = new WorkerOptionsValidator().Validate(null, mixed);
        Assert.True(mixedResult.Failed);
        Assert.Contains("int8 needs ComputeDtype float32", mixedResult.FailureMessage, StringComparison.Ordinal);

        var (valid, _) = Bind(new WorkerArguments { Model = TestModel.Dir, Quantization = "int8" }.ToArgs());
        Assert.True(new WorkerOptionsValidator().Validate(null, valid).Succeeded);
        Assert.Equal("none", new WorkerOptions().Engine.Quantization);
    }

    [Fact]
    public void A_bare_download_only_switch_reads_as_true_wherever_it_stands()
    {
        Assert.True(Bind(WorkerCommandLine.Normalize(["--download-only", "--model", "hf://acme/tiny"])).Options.DownloadOnly);
        var (o, _) = Bind(WorkerCommandLine.Normalize(["--model", "hf://acme/tiny", "--download-only"]));
        Assert.Equal(("hf://acme/tiny", true), (o.ModelDirectory, o.DownloadOnly));
        Assert.False(Bind(WorkerCommandLine.Normalize(["--model", "/m", "--download-only", "false"])).Options.DownloadOnly);
    }
}
