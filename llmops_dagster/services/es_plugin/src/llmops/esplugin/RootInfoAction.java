package llmops.esplugin;

import java.util.List;
import java.util.function.Supplier;
import org.elasticsearch.Build;
import org.elasticsearch.client.internal.node.NodeClient;
import org.elasticsearch.cluster.ClusterState;
import org.elasticsearch.cluster.metadata.Metadata;
import org.elasticsearch.cluster.service.ClusterService;
import org.elasticsearch.index.IndexVersion;
import org.elasticsearch.rest.BaseRestHandler;
import org.elasticsearch.rest.RestRequest;
import org.elasticsearch.rest.RestResponse;
import org.elasticsearch.rest.RestStatus;
import org.elasticsearch.xcontent.XContentBuilder;

/**
 * {@code GET /} and {@code HEAD /} with the body a full node answers (the rest-root module's
 * shape), built from the local cluster state. Answered on this node directly rather than through
 * a transport action: the body only describes the node that receives the request.
 */
final class RootInfoAction extends BaseRestHandler {

    private final Supplier<ClusterService> clusterService;

    RootInfoAction(Supplier<ClusterService> clusterService) {
        this.clusterService = clusterService;
    }

    @Override
    public String getName() {
        return "llmops_root_info_action";
    }

    @Override
    public List<Route> routes() {
        return List.of(new Route(RestRequest.Method.GET, "/"), new Route(RestRequest.Method.HEAD, "/"));
    }

    @Override
    public boolean canTripCircuitBreaker() {
        return false;
    }

    @Override
    protected RestChannelConsumer prepareRequest(RestRequest request, NodeClient client) {
        boolean pretty = request.hasParam("pretty") == false;
        return channel -> {
            ClusterService service = clusterService.get();
            ClusterState state = service.state();
            Metadata metadata = state.metadata();
            Build build = Build.current();
            XContentBuilder builder = channel.newBuilder();
            if (pretty) {
                // Like a full node: pretty by default, ?pretty=false turns it off.
                builder.prettyPrint().lfAtEnd();
            }
            builder.startObject();
            builder.field("name", service.getNodeName());
            builder.field("cluster_name", state.getClusterName().value());
            builder.field("cluster_uuid", metadata.clusterUUIDCommitted() ? metadata.clusterUUID() : "_na_");
            builder.startObject("version")
                .field("number", build.qualifiedVersion())
                .field("build_flavor", build.flavor())
                .field("build_type", build.type().displayName())
                .field("build_hash", build.hash())
                .field("build_date", build.date())
                .field("build_snapshot", build.isSnapshot())
                .field("lucene_version", IndexVersion.current().luceneVersion().toString())
                .field("minimum_wire_compatibility_version", build.minWireCompatVersion())
                .field("minimum_index_compatibility_version", build.minIndexCompatVersion())
                .endObject();
            builder.field("tagline", "You Know, for Search");
            builder.endObject();
            channel.sendResponse(new RestResponse(RestStatus.OK, builder));
        };
    }
}
