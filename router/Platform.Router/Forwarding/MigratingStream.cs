// A generation that outlives its worker (request migration, as NVIDIA Dynamo
// calls it, but on by default and token-exact). It reads the current worker's
// stream; when that worker fails after tokens went to the client (a dead
// process, a reset connection, silence, or an abort from its drain), it starts
// the request again on another worker with the tokens generated so far
// (GenerateRequest.generated_token_ids), up to Router:MigrationLimit times. The
// new worker continues exactly where the client's stream stands: the request
// carries its seed (the router sets one when the client did not), the draw for
// output i depends only on (seed, i), and the engine primes its detokenizer and
// stop checker with the earlier tokens. The KV tier makes the re-prefill of
// prompt + generated tokens mostly a prefix hit. The caller sees one stream.
using System.Diagnostics;
using Platform.Core.Protos;
using Platform.Router.Policies;
using Platform.Router.Telemetry;

namespace Platform.Router.Forwarding;

public sealed partial class MigratingStream : IDisposable
{
    private readonly GenerationForwarder _forwarder;
    private readonly GenerateRequest _request;
    private readonly PlacementRequest _placement;
    private readonly int _limit;
    private readonly RouterMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly CancellationToken _ended;
    private readonly List<int> _generated = [];
    private readonly HashSet<string> _failed = new(StringComparer.Ordinal);
    private WorkerStream _current;

    /// <param name="ended">The client's disconnect or the request's deadline: no migration after it.</param>
    public MigratingStream(WorkerStream first, GenerationForwarder forwarder, GenerateRequest request, PlacementRequest placement, int limit,
        RouterMetrics metrics, TimeProvider time, ILogger logger, CancellationToken ended)
    {
        _current = first;
        _forwarder = forwarder;
        _request = request;
        _placement = placement;
        _limit = limit;
        _metrics = metrics;
        _time = time;
        _logger = logger;
        _ended = ended;
    }

    /// <summary>The worker serving the request now.</summary>
    public string WorkerId => _current.WorkerId;

    /// <summary>How many times the request moved to another worker.</summary>
    public int Migrations { get; private set; }

    /// <summary>Failures after which another worker can take over (a rejected or cancelled request cannot).</summary>
    public static bool CanMigrate(ForwarderError error) =>
        error is ForwarderError.WorkerFailed or ForwarderError.Unreachable or ForwarderError.Timeout or ForwarderError.Aborted;

    /// <summary>The next chunk, the end, or an error that migration could not repair.</summary>
    public async Task<StreamRead> ReadAsync()
    {
        while (true)
        {
            var read = await _current.ReadAsync().ConfigureAwait(false);
            if (read.Error == ForwarderError.None)
            {
                if (read.Chunk is { } chunk) _generated.AddRange(chunk.TokenIds);
                return read;
            }
            if (!CanMigrate(read.Error) || Migrations >= _limit || _ended.IsCancellationRequested) return read;

            // An aborted generation's last text is dropped here: it belongs to tokens the client has not seen,
            // and the next worker, primed with the same tokens, produces it again.
            string failedWorker = _current.WorkerId;
            long failedAt = _time.GetTimestamp();
            _failed.Add(failedWorker);
            LogMigrating(_logger, failedWorker, read.Error, _generated.Count, read.Message);
            var continuation = _request.Clone();
            continuation.GeneratedTokenIds.Clear();
            continuation.GeneratedTokenIds.AddRange(_generated);
            var started = await _forwarder.StartAsync(continuation, _placement, failedAt, null, _failed, _ended).ConfigureAwait(false);
            if (started.Stream is null)
            {
                if (started.Error == ForwarderError.Canceled) return new StreamRead(null, ForwarderError.Canceled, started.Message);
                _metrics.MigrationFailed(read.Error.ToString());
                return new StreamRead(null, read.Error, $"{read.Message}; moving the request to another worker failed: {started.Message}");
            }
            Migrations++;
            _metrics.Migrated(read.Error.ToString(), _request.PromptTokenIds.Count, _generated.Count, _time.GetElapsedTime(failedAt), started.Stream.First.Cached);
            Activity.Current?.AddEvent(new ActivityEvent("migrated", tags: new ActivityTagsCollection
            {
                ["router.migration.from"] = failedWorker,
                ["router.migration.to"] = started.Stream.WorkerId,
                ["router.migration.generated_tokens"] = _generated.Count,
            }));
            _current.Dispose();
            _current = started.Stream;
        }
    }

    public void Dispose() => _current.Dispose();

    [LoggerMessage(Level = LogLevel.Warning, Message = "Worker {Worker} failed mid-stream ({Error}) after {Generated} tokens; moving the request to another worker: {Message}")]
    private static partial void LogMigrating(ILogger logger, string worker, ForwarderError error, int generated, string message);
}
