// The pure builders alone: restricted Pod Security on every pod, GPU and scheduling from the
// spec, a config hash that moves with engine settings but not with the replica count, a
// NetworkPolicy admitting only the model's router and peer workers, and determinism.
using k8s;
using Microsoft.Extensions.Configuration;
using k8s.Models;
using Platform.Operator.Api;
using Platform.Operator.Builders;
using Platform.Operator.Tests.Infrastructure;

namespace Platform.Operator.Tests;

public sealed class ChildObjectsTests
{
    private static readonly ImageDefaults Images = new("reg/worker:1", "reg/router:1");

    private static LongContextModel Model()
    {
        var model = Models.New("m", "ns", replicas: 2);
        model.Metadata.Uid = "uid-1";
        return model;
    }

    [Fact]
    public void Every_pod_meets_the_restricted_pod_security_profile()
    {
        var children = ChildObjects.Build(Model(), Images);
        foreach (var template in new[] { children.Workers.Spec.Template, children.Router.Spec.Template })
        {
            var pod = template.Spec;
            Assert.True(pod.SecurityContext.RunAsNonRoot);
            Assert.NotEqual(0, pod.SecurityContext.RunAsUser);
            Assert.Equal("RuntimeDefault", pod.SecurityContext.SeccompProfile.Type);
            Assert.DoesNotContain(pod.Volumes, v => v.HostPath is not null);
            Assert.NotEqual(true, pod.HostNetwork);
            // Only the router talks to the API server (EndpointSlice discovery), under its own account.
            Assert.Equal(template == children.Router.Spec.Template, pod.AutomountServiceAccountToken);
            foreach (var container in pod.Containers)
            {
                var sc = container.SecurityContext;
                Assert.False(sc.AllowPrivilegeEscalation);
                Assert.NotEqual(true, sc.Privileged);
                Assert.Equal(["ALL"], sc.Capabilities.Drop);
                Assert.Null(sc.Capabilities.Add);
                Assert.True(sc.RunAsNonRoot);
                Assert.Equal("RuntimeDefault", sc.SeccompProfile.Type);
                Assert.NotNull(container.ReadinessProbe.HttpGet);
                Assert.NotNull(container.LivenessProbe.HttpGet);
            }
        }
    }

    [Fact]
    public void Gpus_memory_and_scheduling_come_from_the_spec()
    {
        var model = Model();
        model.Spec.Worker.NodeSelector = new Dictionary<string, string> { ["pool"] = "h100" };
        model.Spec.Worker.Tolerations = [new V1Toleration { Key = "nvidia.com/gpu", OperatorProperty = "Exists", Effect = "NoSchedule" }];
        var workers = ChildObjects.BuildWorkers(model, Images, "hash");
        var container = workers.Spec.Template.Spec.Containers[0];
        Assert.Equal("1", container.Resources.Limits["nvidia.com/gpu"].ToString());
        Assert.Equal("80Gi", container.Resources.Limits["memory"].ToString());
        Assert.Equal("h100", workers.Spec.Template.Spec.NodeSelector["pool"]);
        Assert.Equal("nvidia.com/gpu", workers.Spec.Template.Spec.Tolerations[0].Key);
        Assert.Equal("reg/worker:1", container.Image);

        model.Spec.Worker.Resources.Gpus = 0;
        model.Spec.Worker.Image = "custom/worker:2";
        var cpu = ChildObjects.BuildWorkers(model, Images, "hash").Spec.Template.Spec.Containers[0];
        Assert.False(cpu.Resources.Limits.ContainsKey("nvidia.com/gpu"));
        Assert.Equal("custom/worker:2", cpu.Image);
    }

    [Fact]
    public void Config_hash_follows_engine_settings_but_not_the_replica_count()
    {
        var baseline = ChildObjects.Build(Model(), Images);
        var hash = baseline.Workers.Spec.Template.Metadata.Annotations[Names.ConfigHashAnnotation];

        var scaled = Model();
        scaled.Spec.Replicas = 7;
        var scaledChildren = ChildObjects.Build(scaled, Images);
        Assert.Equal(hash, scaledChildren.Workers.Spec.Template.Metadata.Annotations[Names.ConfigHashAnnotation]);
        Assert.NotEqual(baseline.Workers.Metadata.Annotations[Names.SpecHashAnnotation], scaledChildren.Workers.Metadata.Annotations[Names.SpecHashAnnotation]);

        var retuned = Model();
        retuned.Spec.Worker.Engine.KvMemoryFraction = 0.5;
        var retunedChildren = ChildObjects.Build(retuned, Images);
        Assert.NotEqual(hash, retunedChildren.Workers.Spec.Template.Metadata.Annotations[Names.ConfigHashAnnotation]);
        Assert.Equal(
            retunedChildren.Workers.Spec.Template.Metadata.Annotations[Names.ConfigHashAnnotation],
            retunedChildren.Router.Spec.Template.Metadata.Annotations[Names.ConfigHashAnnotation]);
    }

    [Fact]
    public void The_network_policy_admits_only_the_router_and_peer_workers()
    {
        var policy = ChildObjects.BuildNetworkPolicy(Model());
        Assert.Equal(Names.SelectorLabels("m", Names.WorkerComponent), policy.Spec.PodSelector.MatchLabels);
        Assert.Equal(["Ingress"], policy.Spec.PolicyTypes);
        var rule = Assert.Single(policy.Spec.Ingress);
        Assert.Equal(2, rule.FromProperty.Count);
        Assert.All(rule.FromProperty, p =>
        {
            Assert.Null(p.NamespaceSelector);
            Assert.Null(p.IpBlock);
            Assert.Equal("m", p.PodSelector.MatchLabels[Names.InstanceLabel]);
        });
        Assert.Equal(
            [Names.RouterComponent, Names.WorkerComponent],
            rule.FromProperty.Select(p => p.PodSelector.MatchLabels[Names.ComponentLabel]).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void A_configured_monitoring_namespace_may_reach_only_the_metrics_port()
    {
        var policy = ChildObjects.BuildNetworkPolicy(Model(), new MonitoringAccess("monitoring"));
        Assert.Equal(2, policy.Spec.Ingress.Count);
        var scrape = policy.Spec.Ingress[1];
        var peer = Assert.Single(scrape.FromProperty);
        Assert.Null(peer.PodSelector);
        Assert.Null(peer.IpBlock);
        Assert.Equal(new Dictionary<string, string> { ["kubernetes.io/metadata.name"] = "monitoring" }, peer.NamespaceSelector.MatchLabels);
        var port = Assert.Single(scrape.Ports);
        Assert.Equal(Names.HttpPort.ToString(System.Globalization.CultureInfo.InvariantCulture), port.Port.Value);
        Assert.DoesNotContain(policy.Spec.Ingress.SelectMany(r => r.FromProperty), p => p.NamespaceSelector is not null && p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring");

        // Through the whole build, as the reconciler calls it; without the setting no such rule.
        Assert.Equal(2, ChildObjects.Build(Model(), Images, new MonitoringAccess("monitoring")).NetworkPolicy.Spec.Ingress.Count);
        Assert.Single(ChildObjects.Build(Model(), Images).NetworkPolicy.Spec.Ingress);

        var options = new Platform.Operator.Hosting.OperatorOptions { MonitoringNamespace = "" };
        Assert.Null(options.Monitoring);
        options.MonitoringNamespace = "monitoring";
        Assert.Equal("monitoring", options.Monitoring!.Namespace);
        Assert.Empty(options.Validate());
        options.MonitoringNamespace = "Not_A_Namespace";
        Assert.Contains(options.Validate(), e => e.Contains("monitoring.namespace", StringComparison.Ordinal));
    }

    [Fact]
    public void Pods_get_more_termination_grace_than_their_drain_takes()
    {
        var children = ChildObjects.Build(Model(), Images);
        var worker = children.Workers.Spec.Template.Spec;
        var args = worker.Containers[0].Args;
        var drain = int.Parse(args[args.IndexOf("--drain-grace-seconds") + 1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(Shutdown.WorkerDrainSeconds, drain);
        // The worker's host waits drain + its stop margin; the kubelet must wait longer than that.
        Assert.True(worker.TerminationGracePeriodSeconds > drain + Shutdown.WorkerStopMarginSeconds, $"worker grace {worker.TerminationGracePeriodSeconds} s");
        Assert.True(worker.TerminationGracePeriodSeconds > 30, "Kubernetes' default of 30 s cuts the worker's drain short");

        var router = children.Router.Spec.Template.Spec;
        var shutdown = router.Containers[0].Env.Single(e => e.Name == "DOTNET_SHUTDOWNTIMEOUTSECONDS");
        Assert.Equal(Shutdown.RouterShutdownSeconds, int.Parse(shutdown.Value, System.Globalization.CultureInfo.InvariantCulture));
        Assert.True(router.TerminationGracePeriodSeconds > Shutdown.RouterShutdownSeconds, $"router grace {router.TerminationGracePeriodSeconds} s");
    }

    [Fact]
    public void Secrets_are_passed_by_reference_never_by_value()
    {
        var model = Model();
        model.Spec.KvCache.Remote = new RemoteKvSpec { Redis = new RedisSpec { Address = "redis:6379", SecretRef = new SecretKeyRef { Name = "redis-auth" } } };
        model.Spec.Router.ApiKeySecretRef = new SecretKeyRef { Name = "api", Key = "key" };
        var children = ChildObjects.Build(model, Images);
        var redis = children.Workers.Spec.Template.Spec.Containers[0].Env.Single(e => e.Name == "REDIS_PASSWORD");
        Assert.Equal("redis-auth", redis.ValueFrom.SecretKeyRef.Name);
        Assert.Equal("password", redis.ValueFrom.SecretKeyRef.Key);
        var apiKey = children.Router.Spec.Template.Spec.Containers[0].Env.Single(e => e.Name == "Router__ApiKeys");
        Assert.Equal("key", apiKey.ValueFrom.SecretKeyRef.Key);
        Assert.Contains("redis:6379", children.ConfigMap.Data["engine.json"], StringComparison.Ordinal);
    }

    [Fact]
    public void The_reconciler_walks_one_kind_per_child_in_build_order()
    {
        var children = ChildObjects.Build(Model(), Images);
        Assert.Equal(children.All(), Platform.Operator.Controller.ChildKinds.All.Select(k => k.Desired(children)));
        Assert.Equal(children.All().Select(c => c.Kind), Platform.Operator.Controller.ChildKinds.All.Select(k => k.Kind));
    }

    [Fact]
    public void Building_is_deterministic_and_every_child_is_owned()
    {
        var a = ChildObjects.Build(Model(), Images).All().Select(c => KubernetesJson.Serialize(c)).ToList();
        var b = ChildObjects.Build(Model(), Images).All().Select(c => KubernetesJson.Serialize(c)).ToList();
        Assert.Equal(a, b);
        Assert.All(ChildObjects.Build(Model(), Images).All(), c =>
        {
            Assert.Equal("uid-1", Assert.Single(c.Metadata.OwnerReferences).Uid);
            Assert.Equal("ns", c.Metadata.NamespaceProperty);
            Assert.Equal(Names.ManagedBy, c.Metadata.Labels[Names.ManagedByLabel]);
        });
    }

    [Fact]
    public void The_router_discovers_this_models_workers_with_its_own_switches_and_a_list_watch_role()
    {
        var model = Model();
        model.Spec.Router.Policy = "LeastLoaded";
        var children = ChildObjects.Build(model, Images);
        var pod = children.Router.Spec.Template.Spec;
        var args = pod.Containers[0].Args.ToArray();

        // Every switch is one the router knows, and binding them gives Kubernetes discovery of the worker Service.
        foreach (var option in args.Where(a => a.StartsWith("--", StringComparison.Ordinal)))
        {
            Assert.True(Platform.Router.RouterApp.Switches.ContainsKey(option), $"platform-router has no switch {option}");
        }

        var config = new Microsoft.Extensions.Configuration.ConfigurationBuilder()
            .AddCommandLine(args, Platform.Router.RouterApp.Switches.ToDictionary(kv => kv.Key, kv => kv.Value))
            .Build();
        var options = Microsoft.Extensions.Configuration.ConfigurationBinder.Get<Platform.Router.Configuration.RouterOptions>(config.GetSection("Router"))!;
        Assert.True(options.UsesKubernetes);
        Assert.Equal(children.WorkerService.Metadata.Name, options.Kubernetes.WorkerService);
        Assert.Contains(children.WorkerService.Spec.Ports, p => p.Name == options.Kubernetes.PortName && p.Port == Names.WorkerGrpcPort);
        Assert.Equal("$(POD_NAMESPACE)", options.Kubernetes.Namespace);
        Assert.Contains(pod.Containers[0].Env, e => e.Name == "POD_NAMESPACE" && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace");
        Assert.Equal("least-loaded", options.Placement.Policy);
        Assert.Empty(options.Placement.Validate("Router:Placement"));
        Assert.Equal(Names.HttpPort, options.Port);
        // It listens on its pod IP, which the kubelet supplies through the downward API.
        Assert.Equal("$(POD_IP)", options.Host);
        Assert.Contains(pod.Containers[0].Env, e => e.Name == "POD_IP" && e.ValueFrom.FieldRef.FieldPath == "status.podIP");

        // Its account may list and watch EndpointSlices in the model's namespace, and nothing else.
        Assert.Equal(children.RouterAccount.Metadata.Name, pod.ServiceAccountName);
        var rule = Assert.Single(children.RouterRole.Rules);
        Assert.Equal(["discovery.k8s.io"], rule.ApiGroups);
        Assert.Equal(["endpointslices"], rule.Resources);
        Assert.Equal(["list", "watch"], rule.Verbs);
        Assert.Null(rule.ResourceNames);
        Assert.Equal(children.RouterRole.Metadata.Name, children.RouterRoleBinding.RoleRef.Name);
        Assert.Equal("Role", children.RouterRoleBinding.RoleRef.Kind);
        var subject = Assert.Single(children.RouterRoleBinding.Subjects);
        Assert.Equal((children.RouterAccount.Metadata.Name, "ns"), (subject.Name, subject.NamespaceProperty));
    }

    [Fact]
    public void The_tool_call_parser_reaches_the_router_and_the_crd_offers_exactly_the_routers_parsers()
    {
        static Platform.Router.Configuration.RouterOptions Bind(string[] args) =>
            Microsoft.Extensions.Configuration.ConfigurationBinder.Get<Platform.Router.Configuration.RouterOptions>(
                new Microsoft.Extensions.Configuration.ConfigurationBuilder()
                    .AddCommandLine(args, Platform.Router.RouterApp.Switches.ToDictionary(kv => kv.Key, kv => kv.Value)).Build().GetSection("Router"))!;

        Assert.Null(Bind([.. ChildObjects.Build(Model(), Images).Router.Spec.Template.Spec.Containers[0].Args]).ToolCallParser);
        foreach (var parser in Platform.Router.Api.ToolCalls.ToolCallParser.Names)
        {
            var model = Model();
            model.Spec.Router.ToolCallParser = parser;
            Assert.Equal(parser, Bind([.. ChildObjects.Build(model, Images).Router.Spec.Template.Spec.Containers[0].Args]).ToolCallParser);
        }

        var crd = YamlToJson.Load(RepoPaths.Crd)[0];
        var field = crd["spec"]!["versions"]![0]!["schema"]!["openAPIV3Schema"]!["properties"]!["spec"]!["properties"]!["router"]!["properties"]!["toolCallParser"]!;
        Assert.Equal(Platform.Router.Api.ToolCalls.ToolCallParser.Names, field["enum"]!.AsArray().Select(v => v!.GetValue<string>()).ToList());
    }

    private static Platform.Worker.WorkerOptions BindWorker(IEnumerable<string> args) =>
        new ConfigurationBuilder()
            .AddCommandLine(Platform.Worker.WorkerCommandLine.Normalize([.. args]), Platform.Worker.WorkerCommandLine.SwitchMappings.ToDictionary(kv => kv.Key, kv => kv.Value))
            .Build().GetSection(Platform.Worker.WorkerOptions.Section).Get<Platform.Worker.WorkerOptions>()!;

    [Fact]
    public void The_shipped_defaults_compute_in_float32_with_narrow_weights_on_cpu_and_in_bfloat16_on_gpu()
    {
        // The CRD's defaults as the API server fills them (dtype auto, weightDtype auto), read back by the worker's own parser.
        var model = Model();
        Assert.Equal("auto", model.Spec.Model.Dtype);
        Assert.Equal("auto", model.Spec.Model.WeightDtype);

        model.Spec.Worker.Resources.Gpus = 0;
        var cpu = BindWorker(ChildObjects.WorkerArgs(model)).ResolvedEngine;
        Assert.Equal("float32", cpu.ComputeDtype);
        Assert.Equal("auto", cpu.WeightDtype);
        Assert.Equal("cpu", cpu.Device);
        Assert.Equal("none", cpu.Quantization);
        cpu.Validate();
        Assert.Empty(SpecValidator.Validate(model.Spec));

        model.Spec.Worker.Resources.Gpus = 2;
        var gpu = BindWorker(ChildObjects.WorkerArgs(model)).ResolvedEngine;
        Assert.Equal("bfloat16", gpu.ComputeDtype);
        Assert.Equal("cuda", gpu.Device);
        gpu.Validate();
        Assert.Empty(SpecValidator.Validate(model.Spec));

        // A narrower weight width than bf16 compute is refused by the operator, as the engine would refuse it.
        model.Spec.Model.WeightDtype = "float16";
        var error = Assert.Single(SpecValidator.Validate(model.Spec));
        Assert.Contains("weightDtype float16 needs float32 compute", error, StringComparison.Ordinal);
        model.Spec.Worker.Resources.Gpus = 0;
        Assert.Equal("float16", BindWorker(ChildObjects.WorkerArgs(model)).ResolvedEngine.WeightDtype);
        Assert.Empty(SpecValidator.Validate(model.Spec));
    }

    [Fact]
    public void The_gpu_resource_name_comes_from_the_spec_and_bad_names_are_refused()
    {
        var model = Model();
        model.Spec.Worker.Resources.Gpus = 2;
        model.Spec.Worker.Resources.GpuResource = "amd.com/gpu";
        var resources = ChildObjects.BuildWorkers(model, Images, "hash").Spec.Template.Spec.Containers[0].Resources;
        Assert.Equal("2", resources.Limits["amd.com/gpu"].ToString());
        Assert.Equal("2", resources.Requests["amd.com/gpu"].ToString());
        Assert.False(resources.Limits.ContainsKey("nvidia.com/gpu"));
        Assert.Empty(SpecValidator.Validate(model.Spec));

        model.Spec.Worker.Resources.GpuResource = "gpu";
        Assert.Contains(SpecValidator.Validate(model.Spec), e => e.Contains("gpuResource 'gpu' must be an extended resource name", StringComparison.Ordinal));
    }

    [Fact]
    public void The_crd_offers_exactly_the_numeric_formats_the_engine_accepts()
    {
        var model = YamlToJson.Load(RepoPaths.Crd)[0]["spec"]!["versions"]![0]!["schema"]!["openAPIV3Schema"]!["properties"]!["spec"]!["properties"]!["model"]!["properties"]!;
        static List<string> Enum(System.Text.Json.Nodes.JsonNode field) => [.. field["enum"]!.AsArray().Select(v => v!.GetValue<string>())];
        Assert.Equal(SpecValidator.Dtypes, Enum(model["dtype"]!));
        Assert.Equal(Platform.Core.Workers.NumericFormats.WeightDtypes, Enum(model["weightDtype"]!));
        Assert.Equal(Platform.Core.Workers.NumericFormats.WeightDtypes, Platform.Engine.Model.WeightDtype.Choices);
        Assert.Equal(Platform.Core.Workers.NumericFormats.Quantizations, Enum(model["quantization"]!));
        Assert.Equal(Platform.Core.Workers.NumericFormats.Quantizations, Platform.Engine.Model.Quantization.Choices);
        foreach (var dtype in Platform.Core.Workers.NumericFormats.ComputeDtypes)
            Assert.Equal(dtype, Platform.Engine.Torch.TorchDtypes.Name(Platform.Engine.Torch.TorchDtypes.Parse(dtype)));
    }

    [Fact]
    public void Int8_reaches_cpu_workers_and_is_refused_where_its_kernels_cannot_run()
    {
        var model = Model();
        model.Spec.Model.Quantization = "int8";
        model.Spec.Worker.Resources.Gpus = 0;
        var engine = BindWorker(ChildObjects.WorkerArgs(model)).ResolvedEngine;
        Assert.Equal("int8", engine.Quantization);
        engine.Validate();
        Assert.Empty(SpecValidator.Validate(model.Spec));

        model.Spec.Worker.Resources.Gpus = 1;
        Assert.Contains(SpecValidator.Validate(model.Spec), e => e.Contains("int8 runs on the CPU kernels only", StringComparison.Ordinal));
        // The engine refuses the same combination, so the operator's rule is not stricter than the worker's.
        Assert.Throws<ArgumentException>(() => BindWorker(ChildObjects.WorkerArgs(model)).ResolvedEngine.Validate());

        model.Spec.Worker.Resources.Gpus = 0;
        model.Spec.Model.Dtype = "bfloat16";
        Assert.Contains(SpecValidator.Validate(model.Spec), e => e.Contains("int8 needs float32 compute", StringComparison.Ordinal));
        Assert.Throws<ArgumentException>(() => BindWorker(ChildObjects.WorkerArgs(model)).ResolvedEngine.Validate());
    }
}
