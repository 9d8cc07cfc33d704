package io.receiptflow.registry.deployment;

import java.util.List;

import apicurio.common.app.components.config.index.DynamicPropertiesInfoRecorder;
import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import io.quarkus.arc.deployment.SyntheticBeanBuildItem;
import io.quarkus.deployment.annotations.BuildProducer;
import io.quarkus.deployment.annotations.BuildStep;
import io.quarkus.deployment.annotations.ExecutionTime;
import io.quarkus.deployment.annotations.Record;

/**
 * The one build step of the missing deployment artifact: the registry injects a
 * {@link DynamicConfigPropertyList} bean, which the original step fills with the settings that are
 * editable at run time. The embedded registry needs none of them, so the list is empty.
 */
public class ConfigIndexStandIn {

    @BuildStep
    @Record(ExecutionTime.RUNTIME_INIT)
    void emptyDynamicConfig(DynamicPropertiesInfoRecorder recorder,
            BuildProducer<SyntheticBeanBuildItem> beans) {
        beans.produce(SyntheticBeanBuildItem.configure(DynamicConfigPropertyList.class)
                .runtimeValue(recorder.initializePropertiesInfo(List.of()))
                .unremovable()
                .setRuntimeInit()
                .done());
    }
}
