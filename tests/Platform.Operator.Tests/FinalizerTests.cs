// The KV-purge finalizer: with spec.kvCache.remote.purgeOnDelete the operator keeps a finalizer
// on the model; deleting the model marks it (deletionTimestamp), the operator purges the
// model's key prefix (reading the Redis password from the referenced Secret), removes the
// finalizer, and the model and its children go. A failed purge keeps the model and is retried.
using System.Collections.Concurrent;
using System.Text;
using k8s;
using k8s.Models;
using Platform.Operator.Api;
using Platform.Operator.Builders;
using Platform.Operator.KvStore;
using Platform.Operator.Tests.Infrastructure;

namespace Platform.Operator.Tests;

public sealed class FinalizerTests : IAsyncLifetime
{
    private readonly RecordingPurger _purger = new();
    private TestCluster _cluster = null!;
    private OperatorInstance _operator = null!;

    private IKubernetes Client => _cluster.Client;

    private string Ns => _cluster.Namespace;

    public async Task InitializeAsync()
    {
        _cluster = await TestCluster.StartAsync();
        _operator = await OperatorInstance.StartAsync(_cluster, "finalizer", purger: _purger);
    }

    public async Task DisposeAsync()
    {
        await _operator.DisposeAsync();
        await _cluster.DisposeAsync();
    }

    [Fact]
    public async Task Delete_purges_the_remote_kv_keys_then_lets_the_model_and_children_go()
    {
        await Client.CoreV1.CreateNamespacedSecretAsync(new V1Secret
        {
            Metadata = new V1ObjectMeta { Name = "redis-auth", NamespaceProperty = Ns },
            Data = new Dictionary<string, byte[]> { ["password"] = Encoding.UTF8.GetBytes("s3cret") },
        }, Ns);
        var model = Models.New("purged", Ns);
        model.Spec.KvCache.Remote = new RemoteKvSpec { PurgeOnDelete = true, Redis = new RedisSpec { Address = "redis.test:6379", SecretRef = new SecretKeyRef { Name = "redis-auth" } } };
        _purger.FailuresLeft = 2;
        await Models.CreateAsync(Client, model);

        await Waiter.ModelAsync(Client, Ns, "purged", m => m?.Metadata.Finalizers?.Contains(Names.Finalizer) == true);
        await Waiter.StatefulSetAsync(Client, Ns, "purged-worker", s => s is not null);
        Assert.Empty(_purger.Calls);

        await Client.CustomObjects.DeleteNamespacedCustomObjectAsync(LongContextModel.Group, LongContextModel.Version, Ns, LongContextModel.Plural, "purged");

        await Waiter.ModelAsync(Client, Ns, "purged", m => m is null);
        await Waiter.StatefulSetAsync(Client, Ns, "purged-worker", s => s is null);
        Assert.Equal(3, _purger.Calls.Count);
        Assert.All(_purger.Calls, c => Assert.Equal(("redis.test:6379", "s3cret", $"lcm:{Ns}:purged:"), c));
    }

    [Fact]
    public async Task Without_purgeOnDelete_there_is_no_finalizer_and_no_purge()
    {
        await Models.CreateAsync(Client, Models.New("plain", Ns));
        var reconciled = await Waiter.ModelAsync(Client, Ns, "plain", m => m?.Status?.ObservedGeneration == 1);
        Assert.DoesNotContain(Names.Finalizer, reconciled!.Metadata.Finalizers ?? []);

        await Client.CustomObjects.DeleteNamespacedCustomObjectAsync(LongContextModel.Group, LongContextModel.Version, Ns, LongContextModel.Plural, "plain");
        await Waiter.ModelAsync(Client, Ns, "plain", m => m is null);
        Assert.Empty(_purger.Calls);
    }

    private sealed class RecordingPurger : IKvStorePurger
    {
        public ConcurrentQueue<(string Address, string? Password, string Prefix)> Calls { get; } = new();

        public int FailuresLeft { get; set; }

        public Task<long> PurgeAsync(string address, string? password, string keyPrefix, CancellationToken cancellationToken)
        {
            Calls.Enqueue((address, password, keyPrefix));
            if (FailuresLeft > 0)
            {
                FailuresLeft--;
                throw new IOException("redis unreachable (scripted)");
            }

            return Task.FromResult(3L);
        }
    }
}
