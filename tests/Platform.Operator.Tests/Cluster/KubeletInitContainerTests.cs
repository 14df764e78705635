// The test kubelet runs init containers as a node does: one at a time, in order, each to a zero
// exit before the next (and before any main container); a failing one is retried with backoff,
// its failed run kept as lastState, while the pod is Pending with Initialized=False; env from a
// secretKeyRef and shared volumes work in init containers as in main ones.
using k8s;
using k8s.Models;
using Platform.Operator.Tests.Infrastructure;
using Platform.Testing.Kubernetes.Kubelet;

namespace Platform.Operator.Tests.Cluster;

[Collection(ClusterCollection.Name)]
public sealed class KubeletInitContainerTests
{
    private static V1Container Shell(string name, string script, params V1EnvVar[] env) => new()
    {
        Name = name,
        Image = "shell",
        Args = [script],
        Env = env,
        VolumeMounts = [new V1VolumeMount { Name = "data", MountPath = "/data" }],
    };

    [ClusterFact]
    public async Task Init_containers_run_in_order_to_completion_with_retries_before_the_main_container()
    {
        await using var cluster = await TestCluster.StartAsync(tls: true);
        string state = Path.Combine("/var/tmp", "kubelet-init-" + Guid.NewGuid().ToString("N")[..8]);
        await using (var kubelet = TestKubelet.Start(cluster.RequireFake, new TestKubeletOptions
        {
            Namespace = cluster.Namespace,
            StateDirectory = state,
            Entrypoint = image => image == "shell" ? ["/bin/sh", "-c"] : null,
        }))
        {
            await cluster.Client.CoreV1.CreateNamespacedSecretAsync(new V1Secret
            {
                Metadata = new V1ObjectMeta { Name = "s" },
                StringData = new Dictionary<string, string> { ["token"] = "s3" },
            }, cluster.Namespace);
            var created = await cluster.Client.CoreV1.CreateNamespacedPodAsync(new V1Pod
            {
                Metadata = new V1ObjectMeta { Name = "p" },
                Spec = new V1PodSpec
                {
                    AutomountServiceAccountToken = false,
                    Volumes = [new V1Volume { Name = "data", EmptyDir = new V1EmptyDirVolumeSource() }],
                    InitContainers =
                    [
                        Shell("first", "sleep 0.5; echo first >> /data/order"),
                        // Fails its first run, then succeeds: retried with backoff, the next one waits.
                        Shell("second", "[ -f /data/tried ] || { touch /data/tried; exit 7; }; [ \"$TOKEN\" = s3 ] || exit 9; echo second >> /data/order",
                            new V1EnvVar { Name = "TOKEN", ValueFrom = new V1EnvVarSource { SecretKeyRef = new V1SecretKeySelector { Name = "s", Key = "token", Optional = false } } }),
                    ],
                    Containers = [Shell("main", "echo main >> /data/order; exec sleep 300")],
                },
            }, cluster.Namespace);

            // While the first init container runs: Pending, not Initialized, the main container waiting.
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            V1Pod pod;
            bool sawInit = false;
            while (true)
            {
                pod = await cluster.Client.CoreV1.ReadNamespacedPodAsync("p", cluster.Namespace);
                if (pod.Status?.InitContainerStatuses is { Count: 2 } && pod.Status.Conditions?.FirstOrDefault(c => c.Type == "Initialized")?.Status == "False")
                {
                    sawInit = true;
                    Assert.Equal("Pending", pod.Status.Phase);
                    Assert.Equal("PodInitializing", pod.Status.ContainerStatuses.Single().State.Waiting?.Reason);
                }
                if (pod.Status?.Phase == "Running") break;
                if (DateTime.UtcNow > deadline) Assert.Fail($"the pod did not start: {(pod.Status is { } st ? KubernetesJson.Serialize(st) : "none")}\n{kubelet.Logs()}");
                await Task.Delay(100);
            }
            Assert.True(sawInit, "the pod was never reported in Init");
            Assert.Equal("True", pod.Status.Conditions!.Single(c => c.Type == "Initialized").Status);
            var first = pod.Status.InitContainerStatuses[0];
            var second = pod.Status.InitContainerStatuses[1];
            Assert.Equal(("first", 0, "Completed", 0), (first.Name, first.State.Terminated.ExitCode, first.State.Terminated.Reason, first.RestartCount));
            Assert.Equal(("second", 0, 1), (second.Name, second.State.Terminated.ExitCode, second.RestartCount));
            Assert.True(second.Ready);
            string order = File.ReadAllText(Path.Combine(state, "pods", "p-" + created.Metadata.Uid[..8], "volumes", "data", "order"));
            Assert.Equal("first\nsecond\nmain\n", order);
        }
        try { Directory.Delete(state, recursive: true); } catch (IOException) { /* best effort */ }
    }
}
