// The worker pods the operator builds must start: every switch in the
// StatefulSet's args is one platform-worker knows, and binding them the way
// the worker does gives the mounted model directory, the engine settings of the
// spec, and DistAttention peers by their stable StatefulSet names.
using k8s.Models;
using Microsoft.Extensions.Configuration;
using Platform.Operator.Api;
using Platform.Operator.Builders;

namespace Platform.Worker.Tests;

public sealed class OperatorArgsTests
{
    private static LongContextModel Model(string source, string dtype = "float32") => new()
    {
        Metadata = new V1ObjectMeta { Name = "m", NamespaceProperty = "ns", Uid = "uid-1" },
        Spec = new LongContextModelSpec
        {
            Model = new ModelSpec { Source = source, ServedName = "served", MaxContextTokens = 65536, Dtype = dtype },
            Replicas = 3,
            Worker = new WorkerSpec { Engine = new EngineSpec { BlockSize = 32, MaxBatchTokens = 4096, KvMemoryFraction = 0.8 } },
            KvCache = new KvCacheSpec
            {
                DistAttention = new DistAttentionSpec { Enabled = true, MaxPeers = 2 },
                HostMemory = "64Gi",
                Remote = new RemoteKvSpec { Redis = new RedisSpec { Address = "redis.ns:6379" }, TtlSeconds = 600 },
            },
        },
    };

    private static WorkerOptions Bind(IEnumerable<string> args, string hostName)
    {
        // The kubelet expands $(POD_IP) from the pod's downward-API env before the worker sees its args.
        var expanded = args.Select(a => a.Replace("$(" + ChildObjects.PodIpVariable + ")", "10.0.0.7", StringComparison.Ordinal)).ToArray();
        var config = new ConfigurationBuilder().AddCommandLine(expanded, WorkerCommandLine.SwitchMappings.ToDictionary()).Build();
        var options = config.GetSection(WorkerOptions.Section).Get<WorkerOptions>()!;
        options.WorkerId = hostName;
        return options;
    }

    [Fact]
    public void The_operators_worker_args_bind_to_a_valid_worker_configuration()
    {
        var children = ChildObjects.Build(Model("pvc://models/qwen/7b"), new ImageDefaults("w:1", "r:1"));
        var pod = children.Workers.Spec.Template.Spec;
        var args = pod.Containers[0].Args;
        foreach (var option in args.Where(a => a.StartsWith("--", StringComparison.Ordinal)))
            Assert.True(WorkerCommandLine.SwitchMappings.ContainsKey(option), $"platform-worker has no switch {option}");

        var o = Bind(args, "m-worker-1");
        Assert.Equal("/models/qwen/7b", o.ModelDirectory);
        Assert.Contains(pod.Volumes, v => v.PersistentVolumeClaim?.ClaimName == "models" && v.PersistentVolumeClaim.ReadOnlyProperty == true);
        Assert.Contains(pod.Containers[0].VolumeMounts, m => m.MountPath == "/models" && m.ReadOnlyProperty == true);
        Assert.Equal("served", o.ResolvedServedModelName);
        Assert.Equal(("10.0.0.7", Names.WorkerGrpcPort, Names.HttpPort), (o.Host, o.Port, o.HttpPort));
        Assert.Contains(pod.Containers[0].Env, e => e.Name == ChildObjects.PodIpVariable && e.ValueFrom.FieldRef.FieldPath == "status.podIP");
        var engine = o.ResolvedEngine;
        Assert.Equal((32, 4096, 0.8, 65536, "float32"), (engine.BlockSize, engine.MaxBatchTokens, engine.KvCacheMemoryFraction, engine.MaxContextTokens!.Value, engine.ComputeDtype));
        Assert.True(engine.LendKvBlocks);
        Assert.Equal(("remote", 64L << 30, "redis.ns:6379", Names.KvKeyPrefix("ns", "m"), 600), (o.KvTier.Mode, o.KvTier.HostMemoryBytes, o.KvTier.Remote.Address, o.KvTier.Remote.KeyPrefix, o.KvTier.Remote.TtlSeconds));
        Assert.Empty(o.KvTier.Validate());
        Assert.Equal(2, engine.DistMaxPeers);
        engine.Validate();

        // Peers by stable identity; each pod leaves itself out.
        Assert.Equal(3, o.PeerAddresses.Count);
        using var peers = new KvPeers(Microsoft.Extensions.Options.Options.Create(o));
        Assert.Equal(["http://m-worker-0.m-workers:50051", "http://m-worker-2.m-workers:50051"],
            peers.Endpoints.Select(e => e.Name.Replace(children.WorkerService.Metadata.Name, "m-workers", StringComparison.Ordinal)));

        // The router reads the same model directory for its tokenizer.
        var router = children.Router.Spec.Template.Spec;
        Assert.Equal("/models/qwen/7b", router.Containers[0].Args[router.Containers[0].Args.IndexOf("--model") + 1]);
        Assert.Contains(router.Volumes, v => v.PersistentVolumeClaim?.ClaimName == "models");
    }

    [Fact]
    public void The_shipped_bfloat16_configuration_with_the_kv_tier_and_dist_attention_is_accepted()
    {
        // The CRD defaults to dtype bfloat16, and the operator passes it with --kv-tier and --dist-attention on.
        var children = ChildObjects.Build(Model("pvc://models/qwen/7b", "bfloat16"), new ImageDefaults("w:1", "r:1"));
        var args = children.Workers.Spec.Template.Spec.Containers[0].Args;
        Assert.Equal("bfloat16", args[args.IndexOf("--dtype") + 1]);
        var o = Bind(args, "m-worker-0");
        o.ModelDirectory = TestModel.Dir; // the mounted directory, here a real one
        Assert.Equal("bfloat16", o.ResolvedEngine.ComputeDtype);
        Assert.Equal(Platform.KvCache.KvTierMode.Remote, o.KvTier.ParsedMode);
        Assert.True(o.DistAttentionEnabled);
        var result = new WorkerOptionsValidator().Validate(null, o);
        Assert.True(result.Succeeded, result.FailureMessage);

        // float16 storage is for a float32 engine only: a bfloat16 worker refuses it with the fix.
        o.KvTier = o.KvTier with { StoreDtype = "float16" };
        var refused = new WorkerOptionsValidator().Validate(null, o);
        Assert.True(refused.Failed);
        Assert.Contains("--kv-store-dtype auto", refused.FailureMessage, StringComparison.Ordinal);
    }

    [Fact]
    public void The_kubelet_waits_longer_than_the_worker_takes_to_stop()
    {
        var children = ChildObjects.Build(Model("pvc://models/qwen/7b"), new ImageDefaults("w:1", "r:1"));
        var pod = children.Workers.Spec.Template.Spec;
        var o = Bind(pod.Containers[0].Args, "m-worker-0");
        Assert.Equal(Shutdown.WorkerDrainSeconds, o.DrainGraceSeconds);
        // The worker's host gives up at ShutdownTimeout; SIGKILL must come later.
        Assert.True(TimeSpan.FromSeconds(pod.TerminationGracePeriodSeconds!.Value) > o.ShutdownTimeout,
            $"terminationGracePeriodSeconds {pod.TerminationGracePeriodSeconds} <= the worker's shutdown timeout {o.ShutdownTimeout}");
        Assert.Equal(o.ShutdownTimeout, TimeSpan.FromSeconds(Shutdown.WorkerDrainSeconds + Shutdown.WorkerStopMarginSeconds));
    }

    [Fact]
    public void A_hub_source_binds_to_a_valid_worker_and_its_init_container_to_a_download_only_worker()
    {
        var children = ChildObjects.Build(Model("hf://Qwen/Qwen2.5-7B-Instruct-1M"), new ImageDefaults("w:1", "r:1"));
        var pod = children.Workers.Spec.Template.Spec;
        var main = Bind(pod.Containers[0].Args, "m-worker-0");
        Assert.Equal(("hf://Qwen/Qwen2.5-7B-Instruct-1M", false), (main.ModelDirectory, main.DownloadOnly));
        Assert.False(new WorkerOptionsValidator().Validate(null, main).Failed, "a hub source is valid for the worker");

        var init = Assert.Single(pod.InitContainers);
        Assert.Equal("w:1", init.Image);
        foreach (var option in init.Args.Where(a => a.StartsWith("--", StringComparison.Ordinal)))
            Assert.True(WorkerCommandLine.SwitchMappings.ContainsKey(option), $"platform-worker has no switch {option}");
        var download = Bind(init.Args, "m-worker-0");
        Assert.Equal(("hf://Qwen/Qwen2.5-7B-Instruct-1M", true), (download.ModelDirectory, download.DownloadOnly));
        Assert.False(new WorkerOptionsValidator().Validate(null, download).Failed);
    }

    [Fact]
    public void A_malformed_hub_source_is_refused_by_the_worker_with_the_form_to_write()
    {
        var o = Bind(["--model", "hf://a/b/c"], "w");
        var result = new WorkerOptionsValidator().Validate(null, o);
        Assert.True(result.Failed);
        Assert.Contains("hf://ORG/NAME", result.FailureMessage, StringComparison.Ordinal);
        Assert.Equal("Qwen/Qwen2.5-7B", Bind(["--model", "hf://Qwen/Qwen2.5-7B@v2"], "w").ResolvedServedModelName);
    }

    [Fact]
    public void A_gpu_pod_with_the_kv_tier_and_dist_attention_is_refused_only_for_the_missing_gpu()
    {
        // As the shipped sample runs: GPUs, dtype auto (bfloat16 there), DistAttention and the KV tier on.
        var model = Model("pvc://models/qwen/7b", "auto");
        model.Spec.Worker.Resources.Gpus = 1;
        var args = ChildObjects.Build(model, new ImageDefaults("w:1", "r:1")).Workers.Spec.Template.Spec.Containers[0].Args;
        Assert.Equal("cuda", args[args.IndexOf("--device") + 1]);
        Assert.Equal("bfloat16", args[args.IndexOf("--dtype") + 1]);
        var o = Bind(args, "m-worker-0");
        o.ModelDirectory = TestModel.Dir;
        Assert.True(o.DistAttentionEnabled);
        var result = new WorkerOptionsValidator().Validate(null, o);
        // This machine has no GPU (and a CPU-only libtorch): that, and nothing else, stops the worker.
        Assert.True(result.Failed);
        var failure = Assert.Single(result.Failures!);
        Assert.Contains("cuda", failure, StringComparison.Ordinal);
    }
}
