<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<!-- SW-CLIP error surface: the interpolated error_m in the same classes and colours as the predicted points (viridis, darker = worse); nodata transparent; 70 % opacity over the base map. -->
<qgis version="3.22.16-Białowieża" styleCategories="Symbology|Rendering" hasScaleBasedVisibilityFlag="0" minScale="1e+08" maxScale="0">
  <pipe>
    <rasterrenderer type="singlebandpseudocolor" band="1" opacity="0.7" alphaBand="-1" classificationMin="0" classificationMax="20100000" nodataColor="">
      <rasterTransparency/>
      <minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>
      <rastershader>
        <colorrampshader colorRampType="DISCRETE" classificationMode="1" clip="0" minimumValue="0" maximumValue="20100000" labelPrecision="0">
          <item alpha="255" value="25" label="≤ 25 m" color="#fde725"/>
          <item alpha="255" value="100" label="25 – 100 m" color="#a0da39"/>
          <item alpha="255" value="1000" label="100 m – 1 km" color="#4ac16d"/>
          <item alpha="255" value="25000" label="1 – 25 km" color="#1fa187"/>
          <item alpha="255" value="200000" label="25 – 200 km" color="#277f8e"/>
          <item alpha="255" value="750000" label="200 – 750 km" color="#365c8d"/>
          <item alpha="255" value="2500000" label="750 – 2 500 km" color="#46327e"/>
          <item alpha="255" value="20100000" label="&gt; 2 500 km" color="#440154"/>
        </colorrampshader>
      </rastershader>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" grayscaleMode="0" invertColors="0" colorizeOn="0" colorizeRed="255" colorizeGreen="128" colorizeBlue="128" colorizeStrength="100"/>
    <rasterresampler maxOversampling="2"/>
    <resamplingStage>resamplingFilter</resamplingStage>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
